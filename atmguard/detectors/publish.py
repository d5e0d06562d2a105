"""Where facts go: stdout (JSONL or readable lines) and/or the facts topic through the engine's publisher.

The broker is optional: the detectors run without one. Publishing happens on its own thread
with its own event loop, so a slow broker never stalls the cameras; facts wait in a queue
while the broker is down and are retried (nothing accepted is lost while the process lives).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sys
import threading
from typing import TextIO

from atmguard.core.contracts import BehaviorFact
from atmguard.core.settings import Settings, get_settings
from atmguard.kafka.publisher import EventPublisher

log = logging.getLogger(__name__)


def jsonl_line(fact: BehaviorFact) -> str:
    """One compact JSON object: the contract's wire form."""
    return fact.to_json()


def text_line(fact: BehaviorFact) -> str:
    """A line an operator reads: time, where, what, how long, how sure."""
    what = fact.behavior + (" ended" if fact.ended else "")
    extra = f" glances={fact.count}/{fact.window_s:.0f}s" if fact.count is not None and fact.window_s else ""
    snap = f" snapshot={fact.snapshot}" if fact.snapshot else ""
    return (f"{fact.ts.isoformat(timespec='milliseconds')} {fact.atm_id}/{fact.camera_id} {what:<22} "
            f"{fact.duration_s:7.1f}s conf={fact.confidence:.2f}{extra}{snap}")


class StdoutSink:
    """Prints each fact; with jsonl=True stdout carries nothing but one JSON object per line."""

    def __init__(self, jsonl: bool, stream: TextIO | None = None) -> None:
        self.jsonl = jsonl
        self.stream = stream or sys.stdout

    def __call__(self, fact: BehaviorFact) -> None:
        self.stream.write((jsonl_line(fact) if self.jsonl else text_line(fact)) + "\n")
        self.stream.flush()


def bootstrap_of(broker: str) -> str:
    """kafka://host:port[,host2:port] -> host:port[,host2:port]."""
    return broker.split("://", 1)[1] if "://" in broker else broker


class BrokerSink:
    """Publishes facts to settings.topic_facts via atmguard.kafka.publisher.EventPublisher (key = atm_id)."""

    def __init__(self, broker: str, *, settings: Settings | None = None, retry_s: float = 1.0) -> None:
        self.settings = (settings or get_settings()).model_copy(update={"broker": broker})
        self._publisher = EventPublisher(bootstrap_of(broker), self.settings)
        self._queue: queue.Queue[BehaviorFact | None] = queue.Queue()
        self._retry_s = retry_s
        self._started = threading.Event()
        self._error: BaseException | None = None
        self.published = 0
        self._thread = threading.Thread(target=self._run, name="fact-publisher", daemon=True)
        self._thread.start()
        self._started.wait(30)
        if self._error is not None:
            raise RuntimeError(f"cannot reach the broker at {broker}: {self._error}")

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        try:
            await self._publisher.start()
        except Exception as exc:  # noqa: BLE001 - reported to the constructor
            self._error = exc
            self._started.set()
            return
        self._started.set()
        loop = asyncio.get_running_loop()
        try:
            while True:
                fact = await loop.run_in_executor(None, self._queue.get)
                if fact is None:
                    break
                while True:
                    try:
                        await self._publisher.publish(fact)
                        self.published += 1
                        break
                    except Exception as exc:  # noqa: BLE001 - broker down: keep the fact, retry
                        log.warning("publishing %s failed (%s); retrying in %.1fs", fact.id, exc, self._retry_s)
                        await asyncio.sleep(self._retry_s)
        finally:
            await self._publisher.stop()

    def __call__(self, fact: BehaviorFact) -> None:
        self._queue.put(fact)

    def close(self) -> None:
        """Publish what is queued, then stop."""
        self._queue.put(None)
        self._thread.join(timeout=30)


class Tee:
    """Send each fact to several sinks."""

    def __init__(self, *sinks: object) -> None:
        self.sinks = [s for s in sinks if s is not None]

    def __call__(self, fact: BehaviorFact) -> None:
        for s in self.sinks:
            s(fact)  # type: ignore[operator]

    def close(self) -> None:
        for s in self.sinks:
            close = getattr(s, "close", None)
            if close is not None:
                close()
