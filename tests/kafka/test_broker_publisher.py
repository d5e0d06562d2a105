"""The embedded broker, topic creation and the publisher's broker-ack semantics, on real Tansu."""

from __future__ import annotations

import hashlib
import json
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest

from atmguard.core.contracts import BankEvent, BehaviorFact, parse_event
from atmguard.kafka.broker import TANSU_SHA256, EmbeddedBroker, tansu_path
from atmguard.kafka.publisher import BrokerUnavailable, EventPublisher
from atmguard.kafka.topics import bootstrap_of
from tests.streamkit import ATMGUARD, fact, run, settings_for, transfer

pytestmark = pytest.mark.slow


def test_the_binary_we_run_is_the_pinned_tansu() -> None:
    assert hashlib.sha256(tansu_path().read_bytes()).hexdigest() == TANSU_SHA256


def test_bootstrap_of_broker_urls() -> None:
    assert bootstrap_of("kafka://a:9092") == "a:9092"
    assert bootstrap_of("kafka://a:1,b:2") == "a:1,b:2"
    assert bootstrap_of("kafka://a;kafka://b:9093") == "a:9092,b:9093"


async def _partitions_and_read(broker: EmbeddedBroker, topics: list[str]) -> dict:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(*topics, bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, fetch_max_wait_ms=50)
    await consumer.start()
    try:
        parts = {t: consumer.partitions_for_topic(t) for t in topics}
        records = []
        for _ in range(30):
            batch = await consumer.getmany(timeout_ms=100)
            for rs in batch.values():
                records.extend(rs)
            if records and not batch:
                break
        return {"partitions": parts, "records": records}
    finally:
        await consumer.stop()


def test_publisher_waits_for_acks_and_co_partitions_by_atm(broker: EmbeddedBroker, tmp_path: Path) -> None:
    settings = settings_for(broker, tmp_path)
    events: list[BehaviorFact | BankEvent] = [fact("ATM-7", 10), transfer("ATM-7", 20), transfer(None, 30)]

    async def go() -> None:
        async with EventPublisher(broker.bootstrap, settings) as pub:
            for ev in events:
                await pub.publish(ev)

    run(go())
    seen = run(_partitions_and_read(broker, [settings.topic_facts, settings.topic_bank]))
    assert all(len(p) == 4 for p in seen["partitions"].values())
    by_key: dict[bytes, set[int]] = {}
    for r in seen["records"]:
        by_key.setdefault(r.key, set()).add(r.partition)
    assert set(by_key) == {b"ATM-7", b"bank:halyk"}
    assert len(by_key[b"ATM-7"]) == 1  # fact and bank event of one ATM: same partition number
    assert sorted(parse_event(r.value).id for r in seen["records"]) == sorted(e.id for e in events)


def test_publisher_raises_broker_unavailable_and_recovers_after_restart(broker: EmbeddedBroker, tmp_path: Path) -> None:
    settings = settings_for(broker, tmp_path)

    async def go() -> None:
        pub = EventPublisher(broker.bootstrap, settings, timeout=1.5)
        await pub.start(strict=True)
        try:
            await pub.publish(fact("ATM-1", 1))
            broker.kill()
            with pytest.raises(BrokerUnavailable):
                await pub.publish(fact("ATM-1", 2))
            broker.start()
            await pub.publish(fact("ATM-1", 3))  # topics re-created with the right partition count
        finally:
            await pub.stop()

    run(go(), 60)
    seen = run(_partitions_and_read(broker, [settings.topic_facts]))
    assert len(seen["partitions"][settings.topic_facts]) == 4
    assert [parse_event(r.value).ts for r in seen["records"]] == [fact("ATM-1", 3).ts]


def test_publisher_start_strict_fails_clearly_without_broker(tmp_path: Path) -> None:
    from atmguard.core.settings import Settings
    from atmguard.kafka.broker import free_port

    settings = Settings(data_dir=tmp_path)
    pub = EventPublisher(f"127.0.0.1:{free_port()}", settings, timeout=1.0)
    with pytest.raises(BrokerUnavailable, match="unavailable"):
        run(pub.start(strict=True))


def test_publish_command_sends_in_event_time_order_and_restamps(broker: EmbeddedBroker, tmp_path: Path) -> None:
    settings = settings_for(broker, tmp_path)
    a = tmp_path / "facts.jsonl"
    b = tmp_path / "bank.jsonl"
    a.write_text("\n".join(e.to_json() for e in [fact("ATM-1", 50), fact("ATM-1", 10)]) + "\n", encoding="utf-8")
    b.write_text("# bank\n" + transfer("ATM-1", 30).to_json() + "\n", encoding="utf-8")
    out = subprocess.run(
        [str(ATMGUARD), "publish", str(a), str(b), "--now", "--broker", broker.url],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "published 3 events (2 behaviour facts, 1 bank events)" in out.stdout
    seen = run(_partitions_and_read(broker, [settings.topic_facts, settings.topic_bank]))
    events = sorted((parse_event(r.value) for r in seen["records"]), key=lambda e: e.ts)
    from datetime import UTC, datetime

    assert abs((events[0].ts - datetime.now(UTC)).total_seconds()) < 30  # re-stamped to now
    assert [e.ts - events[0].ts for e in events] == [timedelta(0), timedelta(seconds=20), timedelta(seconds=40)]


def test_publish_command_names_the_bad_line(broker: EmbeddedBroker, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(fact("ATM-1", 1).to_json() + "\n" + json.dumps({"type": "transfer", "id": "x"}) + "\n", encoding="utf-8")
    out = subprocess.run([str(ATMGUARD), "publish", str(bad), "--broker", broker.url], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2
    assert f"{bad}:2" in out.stderr and "field" in out.stderr


def test_ensure_topics_warns_about_topics_made_with_another_partition_count(
    broker: EmbeddedBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from atmguard.kafka.topics import ensure_topics

    settings = settings_for(broker, tmp_path)  # 4 partitions

    async def go() -> list[str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
        await admin.start()
        try:  # an earlier run (or a client's auto-create) made the bank topic with 2
            await admin.create_topics([NewTopic(name=settings.topic_bank, num_partitions=2, replication_factor=1)])
        finally:
            await admin.close()
        return await ensure_topics(broker.bootstrap, settings)

    with caplog.at_level("WARNING", logger="atmguard.kafka.topics"):
        created = run(go())
    assert settings.topic_bank not in created and settings.topic_facts in created
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert f"{settings.topic_bank} has 2" in warning and "configured 4" in warning
    assert settings.topic_facts not in warning  # made now, with 4

    caplog.clear()
    with caplog.at_level("WARNING", logger="atmguard.kafka.topics"):
        run(ensure_topics(broker.bootstrap, settings_for(broker, tmp_path).model_copy(update={"partitions": 2})))
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert f"{settings.topic_facts} has 4" in warning and settings.topic_bank not in warning


def test_publisher_records_how_long_the_broker_took_to_acknowledge(broker: EmbeddedBroker, tmp_path: Path) -> None:
    """atmguard_broker_ack_seconds{topic}: what a bank API answer waits for, on /metrics and in the gateway bench."""
    from benchmarks.gateway import ack_buckets, ack_quantile_ms

    settings = settings_for(broker, tmp_path)
    before, facts_before = ack_buckets(settings.topic_bank), ack_buckets(settings.topic_facts)

    async def go() -> None:
        async with EventPublisher(broker.bootstrap, settings) as pub:
            for i in range(5):
                await pub.publish(transfer("ATM-9", i))
            await pub.publish_many([transfer("ATM-9", 10), transfer("ATM-9", 11)])

    run(go())
    after = ack_buckets(settings.topic_bank)
    assert after[-1][0] == float("inf")
    assert after[-1][1] - dict(before).get(float("inf"), 0.0) == 6  # five single publishes + one batch
    assert ack_buckets(settings.topic_facts) == facts_before  # by topic: nothing was sent to the facts topic
    p99 = ack_quantile_ms(before, after, 0.99)
    assert p99 is not None and 0 < p99 < 5000


def test_ack_quantiles_are_bucket_bounds_of_the_acks_between_two_snapshots() -> None:
    from benchmarks.gateway import ack_quantile_ms

    before = [(0.001, 10.0), (0.01, 10.0), (0.1, 10.0), (float("inf"), 10.0)]
    after = [(0.001, 60.0), (0.01, 108.0), (0.1, 110.0), (float("inf"), 110.0)]  # 50 under 1 ms, 48 under 10, 2 under 100
    assert ack_quantile_ms(before, after, 0.5) == 1.0
    assert ack_quantile_ms(before, after, 0.9) == 10.0
    assert ack_quantile_ms(before, after, 0.99) == 100.0
    assert ack_quantile_ms(after, after, 0.99) is None  # nothing acknowledged in between
    assert ack_quantile_ms([], after, 0.5) == 1.0  # the first snapshot of a label that did not exist yet
