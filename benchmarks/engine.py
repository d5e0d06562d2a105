"""`atmguard bench engine`: latency and lag under the target load, and throughput from one worker to two.

Everything real: the embedded Tansu broker, `atmguard worker` subprocesses running the repo's
rules, a load generator producing to the topics like detectors and the gateway do.

1. Latency under load: ATMs send behaviour facts (on_phone and looking_around, alternating) at
   `fact_rate` each, bank transfers arrive at `bank_rate` in total, each at an ATM whose customer
   is on the phone (so `coached-transfer` fires). Measured: bank event handed to the broker ->
   its intervention read back from the interventions topic (so it includes produce, fetch, the
   engine, publish, and the second fetch: an upper bound). Baseline in the same run: a plain
   record produced to a topic and read back by the same kind of consumer, at the same load.
   Lag: the worker's `atmguard_consumer_lag_messages`, scraped every second.
2. Throughput: a backlog (the same mix) published as fast as possible to 1 worker, then (fresh
   broker) to 2 workers that have split the partitions; events per second until all consumed.
"""

from __future__ import annotations

import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from atmguard.core.contracts import BankEvent, BehaviorFact, Intervention
from atmguard.core.settings import Settings
from atmguard.kafka.broker import EmbeddedBroker, free_port

REPO = Path(__file__).resolve().parents[1]
PING_TOPIC = "atmguard.bench.ping"
WORKER_ENV = {"ATMGUARD_ENGINE_SESSION_TIMEOUT_S": "3", "ATMGUARD_ENGINE_HEARTBEAT_S": "0.5"}
P99_TARGET_RATIO = 2.0
"""Intervention p99 / plain-record p99 of the same run that issue 11 asks for."""


def say(text: str) -> None:
    """Progress on stderr (the report goes to stdout)."""
    sys.stderr.write(f"[bench engine] {text}\n")
    sys.stderr.flush()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))
    return s[k]


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def partitions(self) -> list[int]:
        found = re.findall(r"rule state rebuilt for partitions \[([0-9, ]*)\]", self.text())
        return [int(p) for p in found[-1].split(",") if p.strip()] if found else []

    def metrics(self) -> str:
        import httpx

        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=2).text
        except httpx.HTTPError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def spawn_worker(broker: EmbeddedBroker, rules: Path, workdir: Path, name: str) -> Worker:
    port = free_port()
    log = workdir / f"{name}.log"
    env = {**os.environ, **WORKER_ENV, "PYTHONUNBUFFERED": "1"}
    exe = Path(sys.executable).parent / "atmguard"
    proc = subprocess.Popen(
        [str(exe), "worker", "--broker", broker.url, "--rules", str(rules), "--data-dir", str(workdir / name),
         "--http-port", str(port)],
        stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env,
    )
    return Worker(proc, port, log)


def metric_sum(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


class Load:
    """The synthetic mix: ATMs on the phone and looking around, transfers at them."""

    def __init__(self, atms: int, started: datetime) -> None:
        self.atms = [f"atm-bench-{i:04d}" for i in range(atms)]
        self.started = started
        self.n_facts = 0
        self.n_bank = 0

    def fact(self, now: datetime) -> BehaviorFact:
        i = self.n_facts
        self.n_facts += 1
        atm = self.atms[i % len(self.atms)]
        on_phone = (i // len(self.atms)) % 2 == 0
        start = self.started - timedelta(seconds=90)
        return BehaviorFact(
            id=f"bf-{i}", atm_id=atm, camera_id="cam-1", behavior="on_phone" if on_phone else "looking_around",
            ts=now, started_at=start, duration_s=(now - start).total_seconds(), confidence=0.9,
            count=None if on_phone else 4, window_s=None if on_phone else 60.0, track_id="t1",
        )

    def transfer(self, now: datetime) -> BankEvent:
        i = self.n_bank
        self.n_bank += 1
        return BankEvent(
            type="transfer", id=f"bb-{i}", bank_id="bench", atm_id=self.atms[(i * 7) % len(self.atms)], ts=now,
            amount=Decimal(400000), currency="KZT", payee_new=True, status="initiated",
        )


@dataclass
class LatencyResult:
    bank_sent: int = 0
    fired: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    ping_ms: list[float] = field(default_factory=list)
    lag_samples: list[float] = field(default_factory=list)
    facts_sent: int = 0
    seconds: float = 0.0
    worker_cpu: float = 0.0
    broker_cpu: float = 0.0


async def _latency_phase(broker: EmbeddedBroker, settings: Settings, worker: Worker, atms: int, fact_rate: float,
                         bank_rate: float, seconds: float, warmup: float = 3.0) -> LatencyResult:
    import psutil
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    res = LatencyResult()
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks=1, linger_ms=2, enable_idempotence=False)
    await producer.start()
    consumer = AIOKafkaConsumer(settings.topic_interventions, PING_TOPIC, bootstrap_servers=broker.bootstrap,
                                auto_offset_reset="latest", enable_auto_commit=False, fetch_max_wait_ms=10)
    await consumer.start()
    sent_at: dict[str, float] = {}
    ping_sent: dict[str, float] = {}
    stop = asyncio.Event()

    async def read() -> None:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=50)
            now = time.time()
            for tp, records in batch.items():
                for r in records:
                    if tp.topic == PING_TOPIC:
                        t = ping_sent.pop(r.value.decode(), None)
                        if t is not None:
                            res.ping_ms.append((now - t) * 1000)
                        continue
                    iv = Intervention.model_validate_json(r.value)
                    for ev_id in iv.evidence:
                        t = sent_at.pop(ev_id, None)
                        if t is not None:
                            res.fired += 1
                            res.latencies_ms.append((now - t) * 1000)

    reader = asyncio.create_task(read())
    await asyncio.sleep(1.0)  # consumer assigned at the end of the topics
    load = Load(atms, datetime.now(UTC))
    wproc, bproc = psutil.Process(worker.proc.pid), psutil.Process(broker.pid or 0)
    wproc.cpu_percent(None)
    bproc.cpu_percent(None)
    t0 = time.monotonic()
    tick = 0.01
    next_scrape = t0 + 1
    facts_due = bank_due = 0.0
    measured_from = t0 + warmup
    while True:
        now_m = time.monotonic()
        elapsed = now_m - t0
        if elapsed >= warmup + seconds:
            break
        now = datetime.now(UTC)
        facts_due += fact_rate * atms * tick
        while facts_due >= 1:
            facts_due -= 1
            f = load.fact(now)
            await producer.send(settings.topic_facts, f.to_json().encode(), key=f.atm_id.encode())
        if now_m >= measured_from:
            bank_due += bank_rate * tick
            while bank_due >= 1:
                bank_due -= 1
                b = load.transfer(now)
                sent_at[b.id] = time.time()
                await producer.send(settings.topic_bank, b.to_json().encode(), key=(b.atm_id or "").encode())
                pid = f"p{load.n_bank}"
                ping_sent[pid] = time.time()
                await producer.send(PING_TOPIC, pid.encode(), key=(b.atm_id or "").encode())
        if now_m >= next_scrape:
            next_scrape += 1
            lag = metric_sum(worker.metrics(), "atmguard_consumer_lag_messages")
            res.lag_samples.append(lag)
        # pace by wall time, not by loop iterations (sending takes time too)
        await asyncio.sleep(max(0.0, t0 + (int(elapsed / tick) + 1) * tick - time.monotonic()))
    res.seconds = seconds
    res.worker_cpu = wproc.cpu_percent(None)
    res.broker_cpu = bproc.cpu_percent(None)
    await producer.flush()
    deadline = time.monotonic() + 15
    while sent_at and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    res.lag_samples.append(metric_sum(worker.metrics(), "atmguard_consumer_lag_messages"))
    stop.set()
    await reader
    res.bank_sent = load.n_bank
    res.facts_sent = load.n_facts
    await consumer.stop()
    await producer.stop()
    return res


async def _backlog(broker: EmbeddedBroker, settings: Settings, atms: int, n_facts: int, n_bank: int) -> float:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks=1, linger_ms=5, enable_idempotence=False,
                                max_batch_size=256 * 1024)
    await producer.start()
    load = Load(atms, datetime.now(UTC))
    t0 = time.monotonic()
    every = max(1, n_facts // max(1, n_bank))
    for i in range(n_facts):
        now = datetime.now(UTC)
        f = load.fact(now)
        await producer.send(settings.topic_facts, f.to_json().encode(), key=f.atm_id.encode())
        if i % every == 0 and load.n_bank < n_bank:
            b = load.transfer(now)
            await producer.send(settings.topic_bank, b.to_json().encode(), key=(b.atm_id or "").encode())
    await producer.flush()
    await producer.stop()
    return time.monotonic() - t0


def wait_ready(workers: list[Worker], partitions: int, timeout: float = 60) -> None:
    """Block until the workers hold every partition between them (a settled group)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        parts = [w.partitions() for w in workers]
        if all(parts) and sorted(p for ps in parts for p in ps) == list(range(partitions)):
            time.sleep(1.0)  # let a last rebalance settle
            parts2 = [w.partitions() for w in workers]
            if parts2 == parts:
                return
        for w in workers:
            if w.proc.poll() is not None:
                raise RuntimeError(f"worker exited:\n{w.text()[-2000:]}")
        time.sleep(0.2)
    raise RuntimeError("workers did not get their partitions: " + "; ".join(w.text()[-500:] for w in workers))


def _cpu_s(pids: list[int]) -> float:
    import psutil

    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def _throughput(k: int, rules: Path, workdir: Path, atms: int, n_facts: int, n_bank: int) -> tuple[float, float]:
    """(events/s until the backlog is consumed, worker CPU-seconds per 1,000 events)."""
    from atmguard.kafka.topics import ensure_topics

    with EmbeddedBroker(port=0) as broker:
        settings = Settings(broker=broker.url, data_dir=workdir)
        asyncio.run(ensure_topics(broker.bootstrap, settings))
        workers = [spawn_worker(broker, rules, workdir, f"tp{k}-{i}") for i in range(k)]
        try:
            wait_ready(workers, settings.partitions)
            total = n_facts + n_bank
            pids = [w.proc.pid for w in workers]
            cpu0 = _cpu_s(pids)
            t0 = time.monotonic()
            asyncio.run(_backlog(broker, settings, atms, n_facts, n_bank))
            deadline = time.monotonic() + 300
            consumed = 0.0
            last_say = time.monotonic()
            while time.monotonic() < deadline:
                consumed = sum(metric_sum(w.metrics(), "atmguard_events_in_total") for w in workers)
                if consumed >= total:
                    break
                if time.monotonic() - last_say > 5:
                    last_say = time.monotonic()
                    say(f"  consumed {consumed:,.0f} of {total:,}")
                time.sleep(0.1)
            elapsed = time.monotonic() - t0
            cpu = _cpu_s(pids) - cpu0
            return consumed / elapsed, cpu / max(consumed, 1) * 1000
        finally:
            for w in workers:
                w.stop()


def run_bench(*, atms: int, fact_rate: float, bank_rate: float, seconds: float, workers: list[int]) -> str:
    from atmguard.kafka.topics import ensure_topics

    rules = REPO / "rules"
    lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="atmguard-bench-") as tmp:
        workdir = Path(tmp)
        with EmbeddedBroker(port=0) as broker:
            settings = Settings(broker=broker.url, data_dir=workdir)
            asyncio.run(ensure_topics(broker.bootstrap, settings))
            worker = spawn_worker(broker, rules, workdir, "latency")
            try:
                wait_ready([worker], settings.partitions)
                say(f"latency under load: {atms} ATMs x {fact_rate:g}/s + {bank_rate:g} bank/s for {seconds:.0f} s")
                lat = asyncio.run(_latency_phase(broker, settings, worker, atms, fact_rate, bank_rate, seconds))
            finally:
                worker.stop()
        n_facts = int(atms * fact_rate * 15)  # 15 s of the offered load
        n_bank = int(bank_rate * 15)
        thr = {}
        for k in workers:
            say(f"throughput with {k} worker(s): backlog of {n_facts + n_bank} events")
            thr[k] = _throughput(k, rules, workdir, atms, n_facts, n_bank)
            say(f"  {thr[k][0]:,.0f} events/s, {thr[k][1]:.2f} worker CPU-s per 1,000 events")

    offered = atms * fact_rate + bank_rate
    p50, p99 = percentile(lat.latencies_ms, 50), percentile(lat.latencies_ms, 99)
    b50, b99 = percentile(lat.ping_ms, 50), percentile(lat.ping_ms, 99)
    lines.append(f"load: {atms} ATMs x {fact_rate:g} facts/s + {bank_rate:g} bank events/s = {offered:,.0f} events/s "
                 f"for {lat.seconds:.0f} s (after a 3 s warm-up), rules: {rules.name}/ (5 rules), 4 partitions, 1 worker")
    lines.append("")
    lines.append("| measure | p50 | p99 | max | n |")
    lines.append("|---|---|---|---|---|")
    lines.append(f"| bank event sent -> intervention read from topic (ms) | {p50:.1f} | {p99:.1f} | "
                 f"{max(lat.latencies_ms, default=float('nan')):.1f} | {len(lat.latencies_ms)} of {lat.bank_sent} |")
    lines.append(f"| baseline: plain record sent -> read back, same load (ms) | {b50:.1f} | {b99:.1f} | "
                 f"{max(lat.ping_ms, default=float('nan')):.1f} | {len(lat.ping_ms)} |")
    ratio99 = p99 / b99 if b99 else float("nan")
    lines.append(f"| ratio engine / baseline | {p50 / b50 if b50 else float('nan'):.1f}x | "
                 f"{ratio99:.1f}x | | |")
    lines.append("")
    # the target of issue 11; the floor is about 1x + the engine's own time, since an intervention
    # makes two trips through the broker (bank event in, intervention out) where the plain record makes one
    lines.append(f"target: intervention p99 within {P99_TARGET_RATIO:g}x of the plain-record p99 of the same run: "
                 f"{p99:.1f} / {b99:.1f} ms = {ratio99:.2f}x, {'met' if ratio99 <= P99_TARGET_RATIO else 'NOT met'}")
    lines.append("")
    lag = lat.lag_samples
    lines.append(f"consumer lag (records, sampled each second): max {max(lag, default=0):.0f}, "
                 f"median {statistics.median(lag) if lag else 0:.0f}, at the end {lag[-1] if lag else 0:.0f}; "
                 f"CPU: worker {lat.worker_cpu:.0f}%, broker {lat.broker_cpu:.0f}% of one core")
    lines.append("")
    lines.append(f"throughput, backlog of {n_facts + n_bank:,} events (same mix), until all consumed:")
    lines.append("")
    lines.append("| workers | events/s | vs 1 worker | worker CPU per 1,000 events | events/s per busy core |")
    lines.append("|---|---|---|---|---|")
    base = thr.get(1, (float("nan"), 0.0))[0]
    for k, (rate, cpu_per_k) in thr.items():
        per_core = 1000 / cpu_per_k if cpu_per_k else float("nan")
        lines.append(f"| {k} | {rate:,.0f} | {rate / base:.2f}x | {cpu_per_k:.2f} s | {per_core:,.0f} |")
    lines.append("")
    load1, load5, _ = os.getloadavg()
    lines.append(f"offered load {offered:,.0f} events/s; one worker's measured rate / offered: {base / offered:.2f}x; "
                 f"machine load average during the run: {load5:.1f} (1 min: {load1:.1f}) on {os.cpu_count()} cores")
    return "\n".join(lines)
