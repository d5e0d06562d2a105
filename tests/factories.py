"""Builders of the records and rule packs the tests feed in: behaviour facts, bank events, interventions.

Each returns the real contract model of atmguard.core.contracts (or writes real rule files), so a test
that needs one only names what it cares about; every other field gets a valid default. Overrides use
the contract's own field names, so any field can be set the way the wire format spells it.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import yaml

from atmguard.core.contracts import (
    Actions,
    BankEvent,
    BankEventType,
    Behavior,
    BehaviorFact,
    Contract,
    Intervention,
    MatchedEvent,
    Mode,
    Severity,
    intervention_id,
)

ATM = "atm-zhez-001"
"""An ATM of the shipped configs (configs/atms.yaml), so routing and addresses resolve."""

T0 = datetime(2026, 2, 10, 10, 0, tzinfo=UTC)
"""A fixed event time, for tests that never compare event time with the clock."""

RECENT = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
"""Half an hour ago: for parts that compare event time with the wall clock (the gateway's window for
bank events, the engine's expiry), fixed for the whole test session."""

_serial = itertools.count()


def next_id(prefix: str) -> str:
    """A fresh id like `trx-12`, unique within the test session."""
    return f"{prefix}-{next(_serial)}"


def fact(
    behavior: Behavior = "on_phone",
    *,
    id: str | None = None,
    atm_id: str = ATM,
    camera_id: str = "cam-1",
    ts: datetime = T0,
    duration_s: float = 60.0,
    started_at: datetime | None = None,
    confidence: float = 0.9,
    **fields: Any,
) -> BehaviorFact:
    """A behaviour fact at `ts`; unless told otherwise it started `duration_s` seconds before."""
    return BehaviorFact(
        id=id or next_id(behavior), atm_id=atm_id, camera_id=camera_id, behavior=behavior, ts=ts,
        started_at=ts - timedelta(seconds=duration_s) if started_at is None else started_at,
        duration_s=duration_s, confidence=confidence, **fields,
    )


def bank_event(
    type: BankEventType = "transfer",
    *,
    id: str | None = None,
    bank_id: str = "halyk",
    atm_id: str | None = ATM,
    ts: datetime = T0,
    amount: float | Decimal = 400_000,
    currency: str = "KZT",
    payee_new: bool | None = True,
    status: Literal["initiated", "completed", "declined"] = "initiated",
    **fields: Any,
) -> BankEvent:
    """A bank event (by default a 400 000 KZT transfer to a new payee at `ATM`, just initiated)."""
    return BankEvent(
        # through its text, as pydantic reads a float: 400000.0 stays 400000.0, never a binary fraction
        type=type, id=id or next_id("trx"), bank_id=bank_id, atm_id=atm_id, ts=ts, amount=Decimal(str(amount)),
        currency=currency, payee_new=payee_new, status=status, **fields,
    )


def payload(record: Contract, **changes: Any) -> dict[str, Any]:
    """The JSON object a producer sends for `record` (its wire form), with fields replaced or added.

    Changes are applied to the JSON, not the model, so a test can send what the contract refuses."""
    return {**json.loads(record.to_json()), **changes}


def matched(pattern: str, event: BehaviorFact | BankEvent) -> MatchedEvent:
    """One explained piece of evidence, as the rule engine attaches it to an intervention."""
    return MatchedEvent(pattern=pattern, event_id=event.id, event=payload(event))


def intervention(
    *,
    id: str | None = None,
    rule: str = "coached-transfer",
    rule_version: int = 1,
    severity: Severity = "critical",
    mode: Mode = "enforce",
    atm_id: str = ATM,
    ts: datetime = T0,
    evidence: Sequence[str] | None = None,
    actions: Actions | None = None,
    message: str = "Transfer to a new payee while on the phone.",
    key: str | None = None,
    matched: Sequence[MatchedEvent] = (),
    **fields: Any,
) -> Intervention:
    """An intervention; its evidence defaults to the matched events' ids, and its id is derived from
    rule, version, key and evidence as the engine derives it (so the same call gives the same id)."""
    ids = [m.event_id for m in matched] if evidence is None else list(evidence)
    return Intervention(
        id=id or intervention_id(rule, rule_version, key or atm_id, ids), rule=rule, rule_version=rule_version,
        severity=severity, mode=mode, atm_id=atm_id, ts=ts, evidence=ids,
        actions=Actions(sms=["patrol"], hold=True) if actions is None else actions, message=message, key=key,
        matched=list(matched), **fields,
    )


# ------------------------------------------------------------------------------------------- rule packs

COACHED_TRANSFER = """\
rule: coached-transfer
version: 1
description: Long phone call and nervous glances at the ATM while a large transfer to a new payee is made.
severity: critical            # low | medium | high | critical
mode: enforce                 # enforce, or shadow: evaluated and recorded, nobody notified
when:
  all:                        # every pattern matches, in any arrival order
    - event: on_phone         # a behaviour name, or transfer / withdrawal / deposit
      where:
        duration_s: {gte: 60}
        confidence: {gte: 0.6}
    - event: looking_around
      where: {count: {gte: 3}}
    - event: transfer
      as: first_transfer      # optional alias; later patterns may refer to it
      where:
        amount: {gte: 300000}
        currency: KZT
        payee_new: true
  within: 5m                  # all matched events' ts lie within 5 minutes of each other
  by: atm_id                  # correlation key (default atm_id)
cooldown: 10m                 # at most one intervention per rule and key within this span
actions:
  sms: [patrol]               # recipient groups defined in configs
  radio: [dispatch]
  hold: true                  # advise the bank to hold further operations at this ATM
message: "{atm_id}: on the phone {on_phone.duration_s:.0f}s, looked around {looking_around.count} times, transfer {first_transfer.amount} {first_transfer.currency} to a new payee"
"""
"""The contract example of issue 2, verbatim (three patterns, an alias, a window, a cooldown)."""

PHONE_TRANSFER = """\
rule: phone-transfer
version: 1
severity: critical
description: A large transfer while the customer has been on the phone for a while.
when:
  all:
    - event: on_phone
      where: {duration_s: {gte: 30}}
    - event: transfer
      where: {amount: {gte: 100000}}
  within: 5m
cooldown: 10m
actions: {sms: [patrol], hold: true}
message: "{atm_id}: transfer while on the phone"
"""
"""Two patterns: what the stream tests need to see a firing on the topic."""

HOLD_TRANSFER = """\
rule: coached-transfer
version: 3
severity: critical
when:
  all:
    - event: on_phone
      where: {duration_s: {gte: 60}}
    - event: transfer
      as: first
      where: {amount: {gte: 300000}, payee_new: true}
  within: 5m
cooldown: 10m
actions: {sms: [patrol], hold: true}
message: "{atm_id}: on the phone {on_phone.duration_s:.0f}s, transfer {first.amount} to a new payee"
"""
"""A hold rule on a phone call and one transfer: what the gateway's hold advice needs."""

LONG_CALL = """\
rule: long-call
version: 1
severity: high
when:
  all:
    - event: on_phone
      where: {duration_s: {gte: 60}}
actions: {sms: [patrol]}
message: "{atm_id}: on the phone"
"""
"""The smallest rule: one pattern, no window."""


def rule_file(folder: Path, text: str) -> Path:
    """Where `write_rule_pack` puts a rule: `<rule name>.yaml` in `folder`."""
    return folder / f"{yaml.safe_load(text)['rule']}.yaml"


def write_rule_pack(folder: Path, *rules: str) -> Path:
    """A rules folder holding each rule text in a file named after its rule; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for text in rules:
        rule_file(folder, text).write_text(text, encoding="utf-8")
    return folder
