"""`atmguard bench notifier`: intervention on the topic -> SMS request at the Twilio sink.

Runs the embedded broker (Tansu), the local Twilio sink and a NotifierService on SQLite
consuming the interventions topic, publishes interventions at a fixed rate, and measures
from just before each publish to the moment the sink received that intervention's first
SMS. The baseline, in the same run, is the twilio SDK -> sink round trip alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from sqlalchemy import create_engine, text

from atmguard.core.contracts import Actions, Intervention, MatchedEvent, intervention_id
from atmguard.core.settings import Settings
from atmguard.kafka.broker import EmbeddedBroker
from atmguard.notifier.config import DeploymentConfig, load_deployment
from atmguard.notifier.service import NotifierService
from atmguard.notifier.twilio_client import make_twilio_client

_IV_IN_LINK = re.compile(r"/console/interventions/(iv-[0-9a-f]+)")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


@dataclass
class Stats:
    name: str
    samples: list[float] = field(default_factory=list)  # seconds

    def line(self) -> str:
        ms = [s * 1000 for s in self.samples]
        return (
            f"{self.name}: n={len(ms)} p50={percentile(ms, 50):.1f} ms p90={percentile(ms, 90):.1f} ms "
            f"p99={percentile(ms, 99):.1f} ms max={max(ms):.1f} ms mean={statistics.fmean(ms):.1f} ms"
        )

    def p99_ms(self) -> float:
        return percentile([s * 1000 for s in self.samples], 99)


def _intervention(n: int, atm_id: str, now: datetime) -> Intervention:
    evidence = [f"bench-fact-{n}", f"bench-trx-{n}"]
    return Intervention(
        id=intervention_id("bench-phone-coached", 1, atm_id, evidence),
        rule="bench-phone-coached",
        rule_version=1,
        severity="critical",
        mode="enforce",
        atm_id=atm_id,
        ts=now,
        evidence=evidence,
        actions=Actions(sms=["dispatch"]),
        message="Customer on the phone while transferring to a new payee.",
        matched=[
            MatchedEvent(pattern="on_phone", event_id=evidence[0], event={"type": "behavior", "behavior": "on_phone", "duration_s": 240}),
            MatchedEvent(pattern="transfer", event_id=evidence[1], event={"type": "transfer", "amount": 400000, "currency": "KZT"}),
        ],
    )


@contextlib.contextmanager
def sink_process() -> Iterator[str]:
    """The Twilio sink in its own process (as in production, it does not share our GIL)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "atmguard.apps.twilio_sink", "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().strip()
        if not base_url.startswith("http"):
            raise RuntimeError("twilio sink did not start")
        yield base_url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def sink_messages(base_url: str) -> list[dict[str, Any]]:
    """Accepted SMS the sink recorded (with its CLOCK_MONOTONIC arrival time)."""
    rows = httpx.get(f"{base_url}/_sink/requests", timeout=30).json()
    return [r for r in rows if r["kind"] == "message" and r["http_status"] == 201]


def baseline(settings: Settings, n: int, rate: float) -> Stats:
    """The twilio SDK's Messages.create round trip to the sink alone, at `rate` per second."""
    client = make_twilio_client(settings, timeout=5)
    stats = Stats("baseline: twilio SDK -> sink round trip")
    for i in range(n):
        t0 = time.perf_counter()
        client.messages.create(to="+77015550200", from_="+77102000100", body=f"baseline {i}")
        stats.samples.append(time.perf_counter() - t0)
        time.sleep(max(0.0, 1 / rate - (time.perf_counter() - t0)))
    return stats


async def _topic_leg(
    config: DeploymentConfig, settings: Settings, sink_url: str, db_url: str, n: int, rate: float, workers: int = 8
) -> tuple[Stats, dict[str, Any]]:
    with EmbeddedBroker() as broker:
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(settings.topic_interventions, num_partitions=settings.partitions, replication_factor=1)])
        finally:
            await admin.close()
        service = NotifierService(settings, config, db_url, workers=workers)
        await service.start(broker.bootstrap)
        t_ready = time.perf_counter()
        await service.wait_ready(60)
        join_s = time.perf_counter() - t_ready
        # The producer runs in its own process (as the engine may): its CPU is not the notifier's,
        # and CLOCK_MONOTONIC stamps compare across processes.
        producer = subprocess.Popen(
            [
                sys.executable, "-m", "benchmarks.notifier", "produce", broker.bootstrap,
                settings.topic_interventions, str(n), str(rate), ",".join(a.id for a in config.atms),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        cpu0 = _cpu()
        try:
            out, _ = await asyncio.to_thread(producer.communicate, timeout=n / rate + 60)
            sent_at: dict[str, float] = json.loads(out.strip().splitlines()[-1])
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                got = await asyncio.to_thread(sink_messages, sink_url)
                if len([r for r in got if _IV_IN_LINK.search(r["body"] or "")]) >= n:
                    break
                await asyncio.sleep(0.5)
        finally:
            cpu_s = _cpu() - cpu0
            if producer.poll() is None:
                producer.kill()
                producer.wait()
            await service.stop()
    first: dict[str, float] = {}
    for req in sink_messages(sink_url):
        match = _IV_IN_LINK.search(req["body"] or "")
        if match and match.group(1) in sent_at:
            first.setdefault(match.group(1), req["monotonic"])
    stats = Stats(f"topic -> SMS at sink ({rate:g}/s)")
    stats.samples = [first[k] - sent_at[k] for k in sent_at if k in first]
    return stats, {"join_s": join_s, "missing": len(sent_at) - len(first), "cpu_ms_per_iv": cpu_s * 1000 / max(1, n)}


def _load() -> float:
    return os.getloadavg()[0]


async def _produce(bootstrap: str, topic: str, n: int, rate: float, atms: list[str]) -> dict[str, float]:
    """Publish `n` interventions at `rate`; their ids -> CLOCK_MONOTONIC just before each send."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, acks=1)
    await producer.start()
    sent_at: dict[str, float] = {}
    try:
        ivs = [_intervention(i, atms[i % len(atms)], datetime.now(UTC)) for i in range(n)]
        start = time.perf_counter()
        for i, iv in enumerate(ivs):
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
            sent_at[iv.id] = time.perf_counter()
            await producer.send(topic, iv.to_json().encode(), key=iv.atm_id.encode())
        await producer.flush()
    finally:
        await producer.stop()
    return sent_at


def _cpu() -> float:
    """CPU seconds of this process (notifier + producer; the sink and the broker run apart)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@contextlib.contextmanager
def _database(tmp: str, postgres_url: str | None) -> Iterator[tuple[str, str]]:
    """(url, label): SQLite in `tmp`, or a throwaway schema in the given PostgreSQL database."""
    if not postgres_url:
        yield f"sqlite:///{tmp}/bench.db", "SQLite"
        return
    schema = "bench_" + uuid.uuid4().hex[:10]
    admin = create_engine(postgres_url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in postgres_url else "?"
    try:
        yield f"{postgres_url}{sep}options=-csearch_path%3D{schema}", "PostgreSQL"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def run(
    config_dir: Path, *, n: int = 500, rate: float = 50.0, baseline_n: int = 300, workers: int = 8,
    postgres_url: str | None = None,
) -> list[str]:
    """Run both legs; returns the report lines."""
    config = load_deployment(config_dir)
    lines = [f"atmguard bench notifier: {n} interventions at {rate:g}/s: producer process -> embedded broker -> notifier (SQLite, twilio SDK) -> sink process"]
    with sink_process() as sink_url, tempfile.TemporaryDirectory(prefix="atmguard-bench-") as tmp:
        settings = Settings(twilio_base_url=sink_url, public_url="http://127.0.0.1:8080", data_dir=Path(tmp))
        base = baseline(settings, baseline_n, rate)
        with _database(tmp, postgres_url) as (db_url, db_label):
            full, info = asyncio.run(_topic_leg(config, settings, sink_url, db_url, n, rate, workers))
    lines[0] = lines[0].replace("notifier (SQLite,", f"notifier ({db_label},")
    lines.append(base.line())
    lines.append(full.line())
    ratio = full.p99_ms() / base.p99_ms() if base.p99_ms() else float("nan")
    verdict = "PASS" if full.p99_ms() < 100 and info["missing"] == 0 else "FAIL"
    lines.append(f"p99 ratio topic->sink / baseline: {ratio:.1f}x; consumer group join took {info['join_s']:.1f} s (before timing)")
    lines.append(
        f"notifier process CPU (consumer, DB, SDK): {info['cpu_ms_per_iv']:.1f} ms per intervention "
        f"({info['cpu_ms_per_iv'] * rate / 10:.0f}% of one core at {rate:g}/s); machine load average {_load():.1f}"
    )
    lines.append(f"missing SMS: {info['missing']}; target p99 < 100 ms at 50/s: {verdict}")
    return lines


if __name__ == "__main__":  # the producer process of the benchmark
    if sys.argv[1:2] == ["produce"]:
        bootstrap, topic, count, per_s, atm_list = sys.argv[2:7]
        stamps = asyncio.run(_produce(bootstrap, topic, int(count), float(per_s), atm_list.split(",")))
        print(json.dumps(stamps), flush=True)
