"""Topic names and creation: facts, bank events and interventions, co-partitioned by atm_id."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from atmguard.core.settings import Settings

log = logging.getLogger(__name__)


def bootstrap_of(broker_url: str) -> str:
    """`kafka://h1:9092;h2:9092` (or `,`) -> `h1:9092,h2:9092`, as aiokafka wants it."""
    servers = []
    for part in broker_url.replace(";", ",").split(","):
        part = part.strip()
        if "://" in part:
            part = part.split("://", 1)[1]
        if part:
            servers.append(part if ":" in part else f"{part}:9092")
    if not servers:
        raise ValueError(f"no broker address in {broker_url!r}")
    return ",".join(servers)


def input_topics(settings: Settings) -> list[str]:
    """The topics the engine consumes."""
    return [settings.topic_facts, settings.topic_bank]


def all_topics(settings: Settings) -> list[str]:
    """Every topic the stack needs, all with `settings.partitions` partitions."""
    return [settings.topic_facts, settings.topic_bank, settings.topic_interventions]


def event_key(event: object) -> str:
    """The partitioning key of an event: atm_id, or `bank:<bank_id>` for bank events without one."""
    atm_id = getattr(event, "atm_id", None)
    if atm_id:
        return str(atm_id)
    return f"bank:{getattr(event, 'bank_id', '')}"


async def ensure_topics(bootstrap: str, settings: Settings, *, timeout: float = 15.0) -> list[str]:
    """Create the stack's topics that do not exist yet; return the ones created.

    Producing to an unknown topic auto-creates it with the broker's default partition count,
    which would break co-partitioning, so every process creates them explicitly first.
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout)
        existing = set(await admin.list_topics())
        wanted = [t for t in all_topics(settings) if t not in existing]
        if wanted:
            await admin.create_topics(
                [NewTopic(name=t, num_partitions=settings.partitions, replication_factor=1) for t in wanted]
            )
            log.info("created topics %s with %d partitions", ", ".join(wanted), settings.partitions)
        present = [t for t in all_topics(settings) if t in existing]
        if present:
            mismatched = await _partition_mismatches(admin, present, settings.partitions)
            if mismatched:
                log.warning(
                    "topics made before with another partition count than the configured %d: %s. Events of one "
                    "ATM keep one partition per topic, so the engine still sees them together only if facts and "
                    "bank events have the same count; to change it, recreate the topics (or set "
                    "ATMGUARD_PARTITIONS to what they have)",
                    settings.partitions, ", ".join(f"{t} has {n}" for t, n in mismatched.items()),
                )
        if EPOCH_TOPIC not in existing:
            with contextlib.suppress(Exception):  # another process may have made it meanwhile
                await admin.create_topics([NewTopic(name=EPOCH_TOPIC, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    await ensure_epoch(bootstrap, timeout=timeout)
    return wanted


async def _partition_mismatches(admin: Any, topics: list[str], expected: int) -> dict[str, int]:
    """Topics whose partition count is not `expected` (a client auto-created them first, or an
    earlier run used another setting); empty if the broker cannot say."""
    try:
        described = await admin.describe_topics(topics)
    except Exception as exc:  # noqa: BLE001 - a diagnosis only: never stop a start over it
        log.debug("cannot describe topics %s: %s", topics, exc)
        return {}
    counts = {str(d.get("topic")): len(d.get("partitions") or []) for d in described if isinstance(d, dict)}
    return {t: n for t, n in counts.items() if n and n != expected}


EPOCH_TOPIC = "atmguard.epoch"
"""One record at offset 0 naming the broker's data epoch. The embedded broker keeps everything
in memory, so after a restart the topic is gone or holds a new record: workers compare it to
the one they started with and reset themselves (see atmguard.engine.worker)."""


async def ensure_epoch(bootstrap: str, *, timeout: float = 10.0) -> str:
    """The broker's epoch id, writing a new one if the broker has none (fresh or restarted broker)."""
    import uuid

    from aiokafka import AIOKafkaProducer

    current = await read_epoch(bootstrap, timeout=timeout)
    if current:
        return current
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, acks=1)
    try:
        await asyncio.wait_for(producer.start(), timeout)
        await producer.send_and_wait(EPOCH_TOPIC, uuid.uuid4().hex.encode(), partition=0)
    finally:
        await producer.stop()
    # several processes may race to write one: offset 0 wins for everybody
    return await read_epoch(bootstrap, timeout=timeout) or ""


async def read_epoch(bootstrap: str, *, timeout: float = 5.0) -> str | None:
    """The record at offset 0 of the epoch topic, or None if the topic is missing or empty."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50)
    try:
        await asyncio.wait_for(consumer.start(), timeout)
        return await _read_epoch_with(consumer, TopicPartition(EPOCH_TOPIC, 0), timeout)
    finally:
        await consumer.stop()


async def _read_epoch_with(consumer: Any, tp: Any, timeout: float) -> str | None:
    topics = await consumer.topics()
    if EPOCH_TOPIC not in topics:
        return None
    consumer.assign([tp])
    end = (await consumer.end_offsets([tp])).get(tp, 0)
    if not end:
        return None
    consumer.seek(tp, 0)
    batch = await consumer.getmany(tp, timeout_ms=int(timeout * 1000), max_records=1)
    for records in batch.values():
        for record in records:
            value: bytes | None = record.value
            if record.offset == 0 and value:
                return value.decode()
    return None


async def unless_stray_cancel(coro: Any) -> Any:
    """Await `coro`; a CancelledError that is not ours gives None.

    aiokafka 0.14's `consumer.stop()` (Fetcher.close) lets one out when a fetch was backing off,
    e.g. while the broker restarts; only a cancellation of the awaiting task itself propagates.
    """
    try:
        return await coro
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        log.debug("a Kafka client let a CancelledError out while closing; ignored")
        return None


class EpochWatch:
    """Keeps one consumer open and tells whether the broker's epoch is still `epoch`.

    Both methods survive aiokafka's stray CancelledError (see `unless_stray_cancel`), so callers
    can await them from their own stop and restart paths.
    """

    def __init__(self, bootstrap: str, epoch: str) -> None:
        self.bootstrap = bootstrap
        self.epoch = epoch
        self._consumer: Any = None

    async def changed(self, timeout: float = 2.0) -> bool | None:
        """True if the broker lost its data since, False if not, None if it cannot be reached now."""
        result: bool | None = await unless_stray_cancel(self._changed(timeout))
        return result

    async def _changed(self, timeout: float) -> bool | None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        try:
            if self._consumer is None:
                consumer = AIOKafkaConsumer(
                    bootstrap_servers=self.bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50,
                    request_timeout_ms=int(timeout * 1000) + 1000, metadata_max_age_ms=1000,
                )
                try:
                    await asyncio.wait_for(consumer.start(), timeout)
                except BaseException:  # also on cancellation: never leave a half-started consumer behind
                    with contextlib.suppress(Exception):
                        await consumer.stop()
                    raise
                self._consumer = consumer
            current = await asyncio.wait_for(
                _read_epoch_with(self._consumer, TopicPartition(EPOCH_TOPIC, 0), timeout), timeout + 1
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - unreachable broker: ask again later
            log.debug("epoch check failed: %r", exc)
            await self.close()
            return None
        return current != self.epoch

    async def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            with contextlib.suppress(Exception):
                await unless_stray_cancel(consumer.stop())
