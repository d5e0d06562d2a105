"""Publishing events to the stack's topics with broker-ack semantics.

`publish()` returns only after the broker acknowledged the record, so a caller (the bank
gateway answering 202, `atmguard publish`) can promise the event is durable in the broker.
While the broker is unreachable it raises `BrokerUnavailable`; the next call tries again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import Histogram

from atmguard.core.contracts import BankEvent, BehaviorFact, Intervention
from atmguard.core.errors import AtmGuardError
from atmguard.kafka.compat import abort_producer, check_versions
from atmguard.kafka.topics import ensure_topics, event_key

if TYPE_CHECKING:
    from atmguard.core.settings import Settings

log = logging.getLogger(__name__)

ACK_SECONDS = Histogram(
    "atmguard_broker_ack_seconds",
    "From sending records to the broker's acknowledgement, by topic (a bank API answer waits for it).",
    ["topic"],
    buckets=(0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25,
             0.5, 1.0, 2.5, 5.0),
)


class BrokerUnavailable(AtmGuardError):
    """The broker did not acknowledge in time (down, restarting, unreachable); retry later."""

    def __init__(self, message: str, *, retry_after: float = 2.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class EventPublisher:
    """Sends behaviour facts, bank events and interventions to their topics, keyed by atm_id."""

    def __init__(self, bootstrap: str, settings: Settings, *, timeout: float = 5.0, linger_ms: int = 0) -> None:
        check_versions()  # its producer may be aborted (abort_producer): refuse an aiokafka it does not fit
        self.bootstrap = bootstrap
        self.settings = settings
        self.timeout = timeout
        self.linger_ms = linger_ms
        self._producer: Any = None
        self._topics_ok = False
        self._lock = asyncio.Lock()

    def topic_for(self, event: BehaviorFact | BankEvent | Intervention) -> str:
        """facts -> topic_facts, bank events -> topic_bank, interventions -> topic_interventions."""
        if isinstance(event, BehaviorFact):
            return self.settings.topic_facts
        if isinstance(event, Intervention):
            return self.settings.topic_interventions
        return self.settings.topic_bank

    async def start(self, *, strict: bool = False) -> None:
        """Connect now; when the broker is down, log it and connect on the next publish (or raise if strict)."""
        try:
            await self._connect()
        except BrokerUnavailable:
            if strict:
                raise
            log.warning("broker %s not reachable yet; will retry on publish", self.bootstrap)

    async def stop(self) -> None:
        """Flush and close the producer."""
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                await asyncio.wait_for(producer.stop(), self.timeout)
            except Exception as exc:  # noqa: BLE001 - closing a dead connection must not raise
                log.debug("producer stop: %r", exc)

    async def _connect(self) -> Any:
        async with self._lock:
            if self._producer is not None and self._topics_ok:
                return self._producer
            from aiokafka import AIOKafkaProducer

            try:
                if self._producer is None:
                    producer = AIOKafkaProducer(
                        bootstrap_servers=self.bootstrap,
                        acks=1,
                        linger_ms=self.linger_ms,
                        request_timeout_ms=int(self.timeout * 1000),
                        enable_idempotence=False,  # Tansu has no InitProducerId
                    )
                    try:
                        await asyncio.wait_for(producer.start(), self.timeout)
                    except BaseException:  # also on cancellation: never leave a half-started producer behind
                        await _quiet_stop(producer)
                        raise
                    self._producer = producer
                if not self._topics_ok:
                    await ensure_topics(self.bootstrap, self.settings, timeout=self.timeout)
                    self._topics_ok = True
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # whatever aiokafka raises, the caller sees one BrokerUnavailable
                raise BrokerUnavailable(f"broker {self.bootstrap} unavailable: {exc!r}") from exc
            return self._producer

    async def publish(self, event: BehaviorFact | BankEvent | Intervention) -> None:
        """Send one record and wait for the broker's ack; raise BrokerUnavailable if it does not come."""
        key = event_key(event).encode()
        value = event.to_json().encode()
        topic = self.topic_for(event)
        for attempt in (1, 2):
            producer = await self._connect()
            try:
                sent = time.perf_counter()
                await asyncio.wait_for(producer.send_and_wait(topic, value, key=key), self.timeout)
                ACK_SECONDS.labels(topic).observe(time.perf_counter() - sent)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any send failure: one retry with a fresh producer (below)
                # After a broker restart (memory storage) topics are gone and the producer's metadata is
                # stale: start over with a fresh producer and re-created topics (auto-creation would
                # give them the wrong partition count), once, then tell the caller.
                await self._reset()
                if attempt == 2 or isinstance(exc, asyncio.TimeoutError):
                    raise BrokerUnavailable(f"broker {self.bootstrap} did not acknowledge: {exc!r}") from exc

    async def _reset(self) -> None:
        self._topics_ok = False
        producer, self._producer = self._producer, None
        if producer is not None:
            await _quiet_stop(producer)

    async def abort(self) -> None:
        """Drop the producer now, failing what it has pending (the broker died; see `abort_producer`).

        The next publish connects afresh and re-creates the topics.
        """
        self._topics_ok = False
        producer, self._producer = self._producer, None
        if producer is not None:
            abort_producer(producer, BrokerUnavailable(f"broker {self.bootstrap} restarting"))
            await _quiet_stop(producer)

    async def publish_many(self, events: Iterable[BehaviorFact | BankEvent | Intervention]) -> int:
        """Send several records pipelined (order kept per key), wait for all acks; return how many."""
        producer = await self._connect()
        futures = []
        topics: set[str] = set()
        sent = time.perf_counter()
        try:
            for event in events:
                topics.add(self.topic_for(event))
                futures.append(
                    await producer.send(
                        self.topic_for(event), event.to_json().encode(), key=event_key(event).encode()
                    )
                )
            await asyncio.wait_for(asyncio.gather(*futures), self.timeout + 0.001 * len(futures))
            took = time.perf_counter() - sent
            for topic in topics:  # one observation per topic of the batch: the time its last ack took
                ACK_SECONDS.labels(topic).observe(took)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # whatever aiokafka raises, the caller sees one BrokerUnavailable
            await self._reset()
            raise BrokerUnavailable(f"broker {self.bootstrap} did not acknowledge: {exc!r}") from exc
        return len(futures)

    async def __aenter__(self) -> EventPublisher:
        await self.start(strict=True)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def _quiet_stop(producer: Any) -> None:
    try:
        await asyncio.wait_for(producer.stop(), 2.0)
    except asyncio.CancelledError:
        # aiokafka's stop awaits its sender task, which raises CancelledError if it was aborted
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
    except Exception:  # noqa: BLE001 - closing a dead connection must not raise
        pass
    # a stop that timed out leaves aiokafka's sender running: it would deliver the pending
    # records to whatever broker answers next (see abort_producer)
    abort_producer(producer, BrokerUnavailable("producer stopped"))

