"""Interventions published behind the agent, on the real broker: the next batch does not wait for
the broker's acks, and still no offset is committed before the "published" marks are on the broker."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from atmguard.core.settings import Settings
from atmguard.kafka.broker import EmbeddedBroker
from tests.streamkit import (
    EngineThread,
    fact,
    publish,
    read_interventions,
    run,
    settings_for,
    transfer,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def committed(broker: EmbeddedBroker, group: str, settings: Settings) -> dict[int, int | None]:
    """The engine group's committed offset of each bank-topic partition (None: nothing committed)."""

    async def go() -> dict[int, int | None]:
        consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=group, enable_auto_commit=False)
        await consumer.start()
        try:
            return {p: await consumer.committed(TopicPartition(settings.topic_bank, p)) for p in range(settings.partitions)}
        finally:
            await consumer.stop()

    out: dict[int, int | None] = run(go())
    return out


def test_the_agent_goes_on_while_an_intervention_waits_for_its_ack_and_nothing_is_committed_before_it(
    broker: EmbeddedBroker, rules_dir: Path, tmp_path: Path
) -> None:
    settings = settings_for(broker, tmp_path, rules_dir)
    worker = EngineThread(settings, broker.url, rules_dir, tmp_path / "data").start()
    try:
        engine = worker.engine
        group = engine.app.conf.id
        release = threading.Event()
        original = engine._send_acked
        held: list[Any] = []

        async def ack_held_back(iv: Any) -> None:  # the broker's ack, as slow as the test wants
            held.append(iv)
            while not release.is_set():
                await asyncio.sleep(0.02)
            await original(iv)

        engine._send_acked = ack_held_back
        phone, trx = fact("ATM-P1", 100), transfer("ATM-P1", 110)
        publish(broker, settings, [phone, trx])
        wait_until(lambda: held, 20, "the intervention being published")
        later = fact("ATM-P2", 120)
        publish(broker, settings, [later])
        # the agent took the next batch while the first one's intervention was still unacknowledged
        wait_until(lambda: "e:" + later.id in engine.table.data, 20, "the next batch processed")
        assert not any(k.startswith("i:") for k in engine.table.data)

        time.sleep(1.5)  # several commit intervals (0.2 s): none may commit the bank event's offset yet
        assert all(offset is None or offset == 0 for offset in committed(broker, group, settings).values())

        release.set()
        [iv] = [iv for iv in read_interventions(broker, settings, until=lambda ivs: bool(ivs)) if iv.atm_id == "ATM-P1"]
        wait_until(lambda: "i:" + iv.id in engine.table.data, 10, "the published mark")
        # once the mark is on the broker the bank event's offset is committed (the next commit after it)
        wait_until(lambda: 1 in committed(broker, group, settings).values(), 20, "the bank event's offset committed")
        assert engine.fenced is None and worker.engine is engine
    finally:
        worker.stop()
