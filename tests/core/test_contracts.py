"""The event contracts as producers and consumers see them."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from atmguard.apps.cli import app
from atmguard.core.contracts import (
    BankEvent,
    BehaviorFact,
    Intervention,
    intervention_id,
    parse_event,
    read_events,
)
from atmguard.core.errors import EventError

FACT = {
    "type": "behavior", "id": "f1", "atm_id": "atm-1", "camera_id": "cam-1", "behavior": "on_phone",
    "ts": "2026-02-10T14:03:00+05:00", "started_at": "2026-02-10T14:01:00+05:00", "duration_s": 120,
    "confidence": 0.9,
}
TRANSFER = {
    "type": "transfer", "id": "trx-1", "bank_id": "kaspi", "atm_id": "atm-1", "ts": "2026-02-10T14:03:10Z",
    "amount": 400000, "currency": "KZT", "payee_new": True, "status": "initiated",
}


def test_fact_and_bank_event_are_told_apart_by_type() -> None:
    assert isinstance(parse_event(FACT), BehaviorFact)
    event = parse_event(json.dumps(TRANSFER))
    assert isinstance(event, BankEvent)
    assert event.amount == Decimal(400000)


def test_unknown_extra_fields_are_kept_on_the_wire() -> None:
    event = parse_event({**FACT, "zone": "front", "pose": {"yaw": 0.3}})
    out = json.loads(event.to_json())
    assert out["zone"] == "front" and out["pose"] == {"yaw": 0.3}


def test_amount_round_trips_as_a_json_number() -> None:
    out = json.loads(parse_event({**TRANSFER, "amount": "4400000.50"}).to_json())
    assert out["amount"] == 4400000.5


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"ts": "2026-02-10T14:03:00"}, "ts"),  # no zone
        ({"confidence": 1.5}, "confidence"),
        ({"behavior": "dancing"}, "behavior"),
        ({"duration_s": -1}, "duration_s"),
    ],
)
def test_a_bad_fact_names_the_field(change: dict, field: str) -> None:
    with pytest.raises(EventError) as err:
        parse_event({**FACT, **change}, source="facts.jsonl", line=7)
    assert err.value.field == field
    assert str(err.value).startswith("facts.jsonl:7: field")


def test_bad_currency_and_type_are_rejected() -> None:
    with pytest.raises(EventError) as err:
        parse_event({**TRANSFER, "currency": "tenge"})
    assert err.value.field == "currency"
    with pytest.raises(EventError):
        parse_event({**TRANSFER, "type": "refund"})


def test_jsonl_is_merged_in_event_time_order(tmp_path: Path) -> None:
    a = tmp_path / "a.jsonl"
    b = tmp_path / "b.jsonl"
    a.write_text(json.dumps(TRANSFER) + "\n\n# comment\n")
    b.write_text(json.dumps(FACT) + "\n")
    events = read_events([a, b])
    assert [e.id for e in events] == ["f1", "trx-1"]  # 09:03Z before 14:03:10Z


def test_jsonl_error_says_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(FACT) + "\n{not json\n")
    with pytest.raises(EventError) as err:
        read_events([path])
    assert f"{path}:2:" in str(err.value)


def test_intervention_id_is_deterministic_and_has_a_short_code() -> None:
    a = intervention_id("coached-transfer", 1, "atm-1", ["f1", "trx-1"])
    assert a == intervention_id("coached-transfer", 1, "atm-1", ["f1", "trx-1"])
    assert a != intervention_id("coached-transfer", 2, "atm-1", ["f1", "trx-1"])
    iv = Intervention(
        id=a, rule="coached-transfer", rule_version=1, severity="critical", mode="enforce", atm_id="atm-1",
        ts="2026-02-10T14:03:10Z", evidence=["f1", "trx-1"], actions={"sms": ["patrol"], "hold": True}, message="m",
    )
    assert len(iv.short_code) == 4 and iv.short_code.isalnum()
    assert json.loads(iv.to_json())["actions"]["hold"] is True


def test_published_schemas_are_current(repo: Path) -> None:
    result = CliRunner().invoke(app, ["schemas", "--check", "--out", str(repo / "docs" / "schemas")])
    assert result.exit_code == 0, result.output
