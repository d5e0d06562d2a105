"""The engine on the real broker: facts and bank events in, interventions read back from the topic.

One broker and one engine worker serve the whole module; each test uses its own ATM ids.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from atmguard.core.settings import Settings
from atmguard.kafka.broker import EmbeddedBroker
from tests.streamkit import (
    PHONE_TRANSFER,
    EngineThread,
    fact,
    publish,
    read_interventions,
    settings_for,
    transfer,
    wait_until,
)

pytestmark = pytest.mark.slow


class Stack:
    def __init__(self, broker: EmbeddedBroker, settings: Settings, worker: EngineThread, rules: Path) -> None:
        self.broker, self.settings, self.worker, self.rules = broker, settings, worker, rules

    def publish(self, *events: object) -> None:
        before = self.worker.engine.consumed
        publish(self.broker, self.settings, events)  # type: ignore[arg-type]
        wait_until(lambda: self.worker.engine.consumed >= before + len(events), 20, "engine consumed the events")

    def interventions(self, atms: set[str], n: int, settle: float = 0.5) -> list:
        def enough(ivs: list) -> bool:
            return sum(1 for iv in ivs if iv.atm_id in atms) >= n

        return [iv for iv in read_interventions(self.broker, self.settings, until=enough, settle=settle) if iv.atm_id in atms]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("engine")
    rules = tmp / "rules"
    rules.mkdir()
    (rules / "phone-transfer.yaml").write_text(PHONE_TRANSFER, encoding="utf-8")
    broker = EmbeddedBroker(port=0).start()
    settings = settings_for(broker, tmp, rules)
    worker = EngineThread(settings, broker.url, rules, tmp / "data").start()
    try:
        yield Stack(broker, settings, worker, rules)
    finally:
        worker.stop()
        broker.stop()


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_fact_and_transfer_give_one_intervention_on_the_topic(stack: Stack) -> None:
    firings = metric("atmguard_rule_firings_total", rule="phone-transfer", mode="enforce")
    phone, trx = fact("ATM-A1", 100), transfer("ATM-A1", 130)
    stack.publish(phone, trx)
    [iv] = stack.interventions({"ATM-A1"}, 1)
    assert iv.rule == "phone-transfer" and iv.rule_version == 1 and iv.severity == "critical"
    assert iv.evidence == [phone.id, trx.id]
    assert iv.actions.hold is True and iv.actions.sms == ["patrol"]
    assert iv.atm_id == "ATM-A1" and iv.key == "ATM-A1"
    assert metric("atmguard_rule_firings_total", rule="phone-transfer", mode="enforce") == firings + 1
    assert metric("atmguard_events_in_total", topic=stack.settings.topic_bank, type="transfer") >= 1
    assert metric("atmguard_intervention_latency_seconds_count") >= 1


def test_duplicate_delivery_never_gives_a_second_intervention(stack: Stack) -> None:
    dups = metric("atmguard_events_duplicate_total", topic=stack.settings.topic_bank)
    phone, trx = fact("ATM-D1", 100), transfer("ATM-D1", 120)
    stack.publish(phone, trx, trx, phone, trx)
    ivs = stack.interventions({"ATM-D1"}, 1, settle=1.0)
    assert len(ivs) == 1
    assert metric("atmguard_events_duplicate_total", topic=stack.settings.topic_bank) == dups + 2


def test_out_of_order_within_the_window_fires(stack: Stack) -> None:
    trx = transfer("ATM-O1", 200)
    late_phone = fact("ATM-O1", 150)  # happened before the transfer, arrives after it
    stack.publish(trx, late_phone)
    [iv] = stack.interventions({"ATM-O1"}, 1)
    assert iv.evidence == [late_phone.id, trx.id]


def test_outside_the_window_does_not_fire(stack: Stack) -> None:
    stack.publish(fact("ATM-W2", 0), transfer("ATM-W2", 10))  # a control that fires
    stack.publish(fact("ATM-W1", 0), transfer("ATM-W1", 400))  # 6m40s apart, window 5m
    ivs = stack.interventions({"ATM-W1", "ATM-W2"}, 1, settle=1.0)
    assert [iv.atm_id for iv in ivs] == ["ATM-W2"]


def test_two_atms_interleaved_are_kept_apart(stack: Stack) -> None:
    stack.publish(
        fact("ATM-I1", 100), fact("ATM-I2", 100, behavior="looking_around"),
        transfer("ATM-I2", 110), transfer("ATM-I1", 111), transfer("ATM-I3", 112),
    )
    ivs = stack.interventions({"ATM-I1", "ATM-I2", "ATM-I3"}, 1, settle=1.0)
    assert [iv.atm_id for iv in ivs] == ["ATM-I1"]


def test_a_record_that_breaks_the_contract_is_skipped_and_counted(stack: Stack) -> None:
    from aiokafka import AIOKafkaProducer

    from tests.streamkit import run

    invalid = metric("atmguard_events_invalid_total", topic=stack.settings.topic_facts)

    async def send_garbage() -> None:
        p = AIOKafkaProducer(bootstrap_servers=stack.broker.bootstrap)
        await p.start()
        try:
            await p.send_and_wait(stack.settings.topic_facts, b'{"type": "behavior", "id": "x"}', key=b"ATM-X1")
        finally:
            await p.stop()

    before = stack.worker.engine.consumed
    run(send_garbage())
    wait_until(lambda: stack.worker.engine.consumed > before, 10, "the bad record consumed")
    assert metric("atmguard_events_invalid_total", topic=stack.settings.topic_facts) == invalid + 1
    stack.publish(fact("ATM-X1", 100), transfer("ATM-X1", 101))  # the engine goes on
    assert len(stack.interventions({"ATM-X1"}, 1)) == 1


def test_rule_reload_while_events_flow(stack: Stack) -> None:
    reloads = metric("atmguard_rule_reloads_total")
    stack.publish(fact("ATM-R1", 100), transfer("ATM-R1", 110, amount=50_000))  # below 100k: no firing
    v2 = PHONE_TRANSFER.replace("version: 1", "version: 2").replace("gte: 100000", "gte: 10000")
    (stack.rules / "phone-transfer.yaml").write_text(v2, encoding="utf-8")
    wait_until(lambda: metric("atmguard_rule_reloads_total") > reloads, 30, "the reload")
    stack.publish(fact("ATM-R2", 100), transfer("ATM-R2", 110, amount=50_000))
    ivs = stack.interventions({"ATM-R1", "ATM-R2"}, 1, settle=0.5)
    assert [(iv.atm_id, iv.rule_version) for iv in ivs] == [("ATM-R2", 2)]


def test_invalid_rule_file_is_reported_and_old_rules_keep_running(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    failures = metric("atmguard_rule_reload_failures_total")
    bad = stack.rules / "broken.yaml"
    bad.write_text("rule: broken\nversion: 1\nseverity: critical\nwhen:\n  all:\n    - event: on_fone\n", encoding="utf-8")
    try:
        with caplog.at_level("ERROR", logger="atmguard.engine.faust_app"):
            wait_until(lambda: metric("atmguard_rule_reload_failures_total") > failures, 30, "the failed reload")
        assert any("broken.yaml:" in r.getMessage() and "old rules keep running" in r.getMessage() for r in caplog.records)
        line = next(r.getMessage() for r in caplog.records if "broken.yaml:" in r.getMessage())
        assert line.split("broken.yaml:")[1].split(":")[0].isdigit()  # file:line
        stack.publish(fact("ATM-B1", 100), transfer("ATM-B1", 110))
        assert len(stack.interventions({"ATM-B1"}, 1)) == 1
    finally:
        bad.unlink()


def test_bank_event_without_atm_is_consumed_without_firing(stack: Stack) -> None:
    before = metric("atmguard_events_in_total", topic=stack.settings.topic_bank, type="transfer")
    stack.publish(transfer(None, 100))
    assert metric("atmguard_events_in_total", topic=stack.settings.topic_bank, type="transfer") == before + 1


def test_state_table_records_events_and_interventions_by_id(stack: Stack) -> None:
    phone, trx = fact("ATM-T1", 100), transfer("ATM-T1", 105)
    stack.publish(phone, trx)
    [iv] = stack.interventions({"ATM-T1"}, 1)
    data = stack.worker.engine.table.data
    wait_until(lambda: "i:" + iv.id in data, 5, "the published mark")
    assert data["e:" + phone.id]["k"] == "ATM-T1"
    assert data[f"b:halyk:{trx.id}"]["p"] == data["e:" + phone.id]["p"]  # co-partitioned by atm_id
