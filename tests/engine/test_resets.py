"""The stream parts when something goes away under them, on the real broker: a batch
interrupted half-way, and a broker restart seen by the notifier and by `atmguard up`'s wiring."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from atmguard.apps.twilio_sink import TwilioSink
from atmguard.core.contracts import Intervention
from atmguard.core.settings import Settings
from atmguard.kafka.broker import EmbeddedBroker, free_port
from atmguard.kafka.publisher import BrokerUnavailable, EventPublisher
from atmguard.kafka.topics import ensure_topics
from atmguard.notifier.config import load_deployment
from atmguard.notifier.service import NotifierService
from tests.conftest import REPO
from tests.streamkit import (
    EngineThread,
    fact,
    publish,
    read_interventions,
    settings_for,
    transfer,
    wait_until,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

CONFIGS = REPO / "configs"


def test_a_batch_interrupted_half_way_is_processed_again(broker: EmbeddedBroker, rules_dir: Path, tmp_path: Path) -> None:
    """Faust acks a batch when the agent leaves it, also when a cancellation (worker stop, Faust
    restarting the agent) left it half-way: its records must not be committed as processed."""
    settings = settings_for(broker, tmp_path, rules_dir)
    worker = EngineThread(settings, broker.url, rules_dir, tmp_path / "data").start()
    try:
        first = worker.engine
        original = first._publish_many
        interrupted: list[Any] = []

        async def cancelled_while_publishing(items: Any) -> None:
            # a real cancellation of the agent's task, landing inside handle_batch
            interrupted.append(items)
            task = asyncio.current_task()
            assert task is not None
            task.cancel()
            await asyncio.sleep(5)
            await original(items)

        first._publish_many = cancelled_while_publishing
        publish(broker, settings, [fact("ATM-C1", 100), transfer("ATM-C1", 110)])
        ivs = read_interventions(broker, settings, until=lambda ivs: len(ivs) >= 1, timeout=60, settle=1.0)
        assert interrupted, "the batch was never interrupted"
        assert [iv.atm_id for iv in ivs] == ["ATM-C1"]
        assert worker.engine is not first  # a fresh app got the records again
    finally:
        worker.stop()


# --- the notifier --------------------------------------------------------------------------------


def _iv(n: int, atm: str = "atm-zhez-001") -> Intervention:
    from tests.notifier.conftest import make_iv

    return make_iv(n, sms=("dispatch",), atm_id=atm)


def _sent_ids(sink: TwilioSink) -> set[str]:
    """Intervention ids of the SMS the local Twilio server got (each SMS ends with its console link)."""
    return {(m.body or "").rsplit("/", 1)[-1] for m in sink.messages if m.body}


@pytest.fixture
def sink() -> Iterator[TwilioSink]:
    with TwilioSink() as s:
        yield s


async def test_notifier_delivers_what_is_published_after_a_broker_restart(
    broker: EmbeddedBroker, sink: TwilioSink, tmp_path: Path
) -> None:
    """The restart comes while the notifier records a batch: the offsets it commits next are of
    topics that are gone; landing in the new ones they would skip what is published there."""
    settings = Settings(twilio_base_url=sink.base_url, public_url="http://127.0.0.1:9", config_dir=CONFIGS, partitions=1)
    await ensure_topics(broker.bootstrap, settings)
    service = NotifierService(settings, load_deployment(CONFIGS), f"sqlite:///{tmp_path / 'n.db'}", tick_s=0.1)
    recording, go_on = threading.Event(), threading.Event()
    record_batch = service._record_batch

    def held_while_the_broker_restarts(ivs: list[Intervention]) -> Any:
        if not go_on.is_set():
            recording.set()
            go_on.wait(20)
        return record_batch(ivs)

    service._record_batch = held_while_the_broker_restarts  # type: ignore[method-assign]
    await service.start(broker.bootstrap)
    try:
        await service.wait_ready(30)
        async with EventPublisher(broker.bootstrap, settings) as pub:
            for n in (1, 2, 3):
                await pub.publish(_iv(n))
        assert await asyncio.to_thread(recording.wait, 20)
        await asyncio.to_thread(broker.kill)
        await asyncio.to_thread(broker.start)
        await ensure_topics(broker.bootstrap, settings)  # what the engine's reset does
        await asyncio.sleep(2)  # the consumer's heartbeat meets the new broker: its group membership is reset
        go_on.set()  # the batch is recorded now; its offsets get committed into the restarted broker
        await asyncio.sleep(3)
        after = _iv(50)
        async with EventPublisher(broker.bootstrap, settings) as pub:
            await pub.publish(after)
        await asyncio.to_thread(wait_until, lambda: after.id in _sent_ids(sink), 40, "the SMS of the intervention")
    finally:
        go_on.set()
        await service.stop()


async def test_up_restarts_a_crashed_broker_and_interventions_reach_the_officers_again(
    rules_dir: Path, sink: TwilioSink, tmp_path: Path
) -> None:
    """`atmguard up`'s wiring (embedded broker, bank-API publisher, engine, notifier): the broker
    crashes while a bank event is being published, the stack restarts it, and what happens
    afterwards is detected and notified. (A record retried into the restarted broker before
    its topic exists would break that partition for good: Tansu 0.6.0.)"""
    from atmguard.apps.up import start_stack, stop_stack
    from atmguard.engine.faust_app import EngineOptions

    data = tmp_path / "data"
    settings = Settings(
        data_dir=data, rules_dir=rules_dir, config_dir=CONFIGS, partitions=4,
        twilio_base_url=sink.base_url, public_url="http://127.0.0.1:9",
    )
    options = EngineOptions(rules_dir=rules_dir, data_dir=data, session_timeout_s=2.0, heartbeat_s=0.3,
                            reload_debounce_ms=100)
    stack = await start_stack(settings, data_dir=data, engine_options=options, local_twilio=False,
                              broker_port=free_port())
    try:
        assert stack.notifier is not None
        await stack.notifier.wait_ready(60)
        await asyncio.to_thread(wait_until, lambda: stack.engine is not None and stack.engine.restored > 0, 60, "engine")
        for ev in (fact("atm-zhez-001", 100), transfer("atm-zhez-001", 110)):
            await stack.publisher.publish(ev)
        await asyncio.to_thread(wait_until, lambda: len(_sent_ids(sink)) >= 1, 40, "the first SMS")
        first_engine = stack.engine

        await asyncio.to_thread(stack.broker.kill)  # a crash; the stack restarts the broker
        # as the bank API does: published now, while the broker is down; 503 (BrokerUnavailable) means retry
        deadline = time.monotonic() + 60
        for ev in (fact("atm-zhez-004", 200), transfer("atm-zhez-004", 210)):
            while True:
                try:
                    await stack.publisher.publish(ev)
                    break
                except BrokerUnavailable:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)
        await asyncio.to_thread(
            wait_until, lambda: stack.engine is not first_engine and stack.engine.restored > 0, 90, "the engine reset"
        )
        await asyncio.to_thread(wait_until, lambda: len(_sent_ids(sink)) >= 2, 60, "an SMS after the restart")
        ivs = await asyncio.to_thread(
            read_interventions, stack.broker, settings, until=lambda ivs: len(ivs) >= 1, settle=0.5
        )
        assert [iv.atm_id for iv in ivs] == ["atm-zhez-004"]  # the topic restarted empty
        assert ivs[0].id in _sent_ids(sink)
    finally:
        await stop_stack(stack, data)
