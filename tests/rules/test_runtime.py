"""RuleEngine semantics on real durable_rules: what rule authors and the engine rely on."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
import yaml

from atmguard.core.contracts import BankEvent, Behavior, BehaviorFact, intervention_id
from atmguard.rules.runtime import KeyState, RuleEngine
from atmguard.rules.schema import Rule
from tests import factories
from tests.factories import COACHED_TRANSFER, T0

COACHED = COACHED_TRANSFER

SECOND = """
rule: second-larger-transfer
version: 1
severity: critical
when:
  all:
    - event: on_phone
    - event: transfer
      as: first
    - event: transfer
      as: second
      where: {amount: {gt: first.amount}}
  within: 10m
cooldown: 10m
actions: {sms: [patrol]}
message: "{atm_id}: {first.amount} then {second.amount} while on the phone"
"""


def rule(text: str, **changes: Any) -> Rule:
    data = yaml.safe_load(text)
    data.update(changes)
    return Rule.model_validate(data)


@dataclass
class Pack:
    """Stands in for the loader's RuleSet: RuleEngine needs only `.rules` and `.digest`."""

    rules: list[Rule]
    digest: str = field(default="test")


def engine(*texts: str, **kw: Any) -> RuleEngine:
    return RuleEngine(Pack([rule(t) for t in texts]), **kw)


_ids = itertools.count()


def fact(behavior: Behavior, at: float, *, atm: str = "ATM-1", duration: float | None = None, id: str | None = None,
         camera: str = "cam-1", track: str | None = "t1", **extra: Any) -> BehaviorFact:
    """A fact `at` seconds after T0 of a behaviour that began at T0 (so by default it lasted `at` seconds)."""
    return factories.fact(
        behavior, id=id or f"{behavior}-{next(_ids)}", atm_id=atm, camera_id=camera, ts=T0 + timedelta(seconds=at),
        started_at=T0, duration_s=at if duration is None else duration, track_id=track, **extra,
    )


def transfer(at: float, amount: float, *, atm: str | None = "ATM-1", id: str | None = None, bank_id: str = "bank-1",
             **extra: Any) -> BankEvent:
    """A transfer to a new payee `at` seconds after T0."""
    return factories.bank_event(id=id or f"trx-{next(_ids)}", bank_id=bank_id, atm_id=atm, ts=T0 + timedelta(seconds=at),
                                amount=amount, **extra)


def fired(eng: RuleEngine, *events: Any) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for ev in events:
        out.extend((iv.rule, iv.atm_id) for iv in eng.feed(ev))
    return out


# --------------------------------------------------------------------------- the contract rule


def test_coached_transfer_fires_once_explained() -> None:
    eng = engine(COACHED)
    phone, look, trx = fact("on_phone", 70), fact("looking_around", 80, count=4), transfer(90, 400000)
    assert eng.feed(phone) == [] and eng.feed(look) == []
    [iv] = eng.feed(trx)
    assert iv.rule == "coached-transfer" and iv.rule_version == 1 and iv.severity == "critical"
    assert iv.mode == "enforce" and iv.atm_id == "ATM-1" and iv.key == "ATM-1"
    assert iv.evidence == [phone.id, look.id, trx.id]
    assert [m.pattern for m in iv.matched] == ["on_phone", "looking_around", "first_transfer"]
    assert [m.event_id for m in iv.matched] == iv.evidence and iv.matched[2].event["amount"] == 400000
    assert iv.id == intervention_id("coached-transfer", 1, "ATM-1", iv.evidence)
    assert iv.ts == trx.ts
    assert iv.actions.sms == ["patrol"] and iv.actions.radio == ["dispatch"] and iv.actions.hold
    assert iv.message == "ATM-1: on the phone 70s, looked around 4 times, transfer 400000 KZT to a new payee"


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_any_arrival_order_fires(order: tuple[int, ...]) -> None:
    eng = engine(COACHED)
    events = [fact("on_phone", 70), fact("looking_around", 80, count=4), transfer(90, 400000)]
    got = fired(eng, *(events[i] for i in order))
    assert got == [("coached-transfer", "ATM-1")]


def test_conditions_and_window_must_hold() -> None:
    eng = engine(COACHED)
    # too short a call, too few glances, wrong currency, old payee, other ATM, outside the 5 min window
    assert fired(eng, fact("on_phone", 30), fact("looking_around", 40, count=4), transfer(50, 400000)) == []
    assert fired(eng, fact("on_phone", 70, atm="A2"), fact("looking_around", 80, atm="A2", count=2),
                 transfer(90, 400000, atm="A2")) == []
    assert fired(eng, fact("on_phone", 70, atm="A3"), fact("looking_around", 80, atm="A3", count=5),
                 transfer(90, 400000, atm="A3", currency="USD"), transfer(91, 400000, atm="A3", payee_new=False),
                 transfer(92, 400000, atm="A4")) == []
    assert fired(eng, fact("on_phone", 70, atm="A5"), fact("looking_around", 80, atm="A5", count=5),
                 transfer(80 + 301, 400000, atm="A5")) == []
    # exactly at the window's edge still counts
    assert fired(eng, fact("on_phone", 70, atm="A6"), fact("looking_around", 80, atm="A6", count=5),
                 transfer(70 + 300, 400000, atm="A6")) == [("coached-transfer", "A6")]


def test_out_of_order_within_window_fires() -> None:
    eng = engine(COACHED)
    # the bank event arrives first although it happened last; the facts arrive late, older
    assert fired(eng, transfer(200, 400000), fact("looking_around", 150, count=3), fact("on_phone", 120)) == [
        ("coached-transfer", "ATM-1")
    ]


# --------------------------------------------------------------------------- independence, cooldown, duplicates


def test_rules_are_independent_and_events_reused() -> None:
    """Zhezkazgan: 400,000 then 4,400,000 KZT while on the phone; both rules see the same call."""
    eng = engine(COACHED, SECOND)
    phone = fact("on_phone", 70)
    got = fired(eng, phone, fact("looking_around", 80, count=4), transfer(90, 400000))
    assert got == [("coached-transfer", "ATM-1")]
    [iv] = eng.feed(transfer(150, 4_400_000))
    assert iv.rule == "second-larger-transfer" and iv.evidence[0] == phone.id
    assert iv.message == "ATM-1: 400000 then 4400000 while on the phone"
    # a same-size transfer is not larger; the same transfer never matches both patterns
    eng2 = engine(SECOND)
    assert fired(eng2, fact("on_phone", 10), transfer(20, 1000), transfer(30, 1000)) == []


def test_cooldown_in_event_time() -> None:
    eng = engine(COACHED)
    base = [fact("on_phone", 70), fact("looking_around", 80, count=4)]
    assert fired(eng, *base, transfer(90, 400000)) == [("coached-transfer", "ATM-1")]
    # 3 minutes later: same match again, inside the 10 min cooldown -> nothing
    assert fired(eng, fact("on_phone", 250), transfer(270, 500000)) == []
    # 11 minutes of event time later (fed instantly): fires again
    later = 90 + 11 * 60
    assert fired(eng, fact("on_phone", later - 20), fact("looking_around", later - 10, count=3),
                 transfer(later, 600000)) == [("coached-transfer", "ATM-1")]
    # cooldown is per key: another ATM fires meanwhile
    assert fired(eng, fact("on_phone", 70, atm="A2"), fact("looking_around", 80, atm="A2", count=4),
                 transfer(90, 400000, atm="A2")) == [("coached-transfer", "A2")]


def test_duplicate_ids_are_ignored() -> None:
    eng = engine(COACHED)
    phone, look, trx = fact("on_phone", 70), fact("looking_around", 80, count=4), transfer(90, 400000)
    assert len(eng.feed(phone) + eng.feed(look) + eng.feed(trx)) == 1
    eng2 = engine(COACHED, SECOND)
    assert fired(eng2, phone, trx) == []
    assert fired(eng2, trx, trx, transfer(95, 400000, id=trx.id)) == []  # same id twice: still one transfer


def test_newer_update_supersedes_older() -> None:
    eng = engine(COACHED)
    for s in range(10, 200, 10):
        eng.feed(fact("on_phone", s, id=f"call-{s}"))
    state = eng.export_state("ATM-1")
    assert [e["id"] for e in state.events] == ["call-190"]  # one update stands for the behaviour
    # an older update arriving late does not replace the newer one
    eng.feed(fact("on_phone", 15, id="late"))
    assert [e["id"] for e in eng.export_state("ATM-1").events] == ["call-190"]
    # another camera / track is another behaviour
    eng.feed(fact("on_phone", 195, camera="cam-2", id="cam2"))
    assert {e["id"] for e in eng.export_state("ATM-1").events} == {"call-190", "cam2"}
    [iv] = eng.feed(fact("looking_around", 196, count=3)) + eng.feed(transfer(197, 400000))
    assert iv.evidence[0] == "cam2"  # the freshest combination is the evidence


def test_shadow_disabled_and_priority() -> None:
    low = rule(SECOND, rule="a-low", priority=1, mode="shadow")
    high = rule(SECOND, rule="z-high", priority=5)
    off = rule(SECOND, rule="off", enabled=False)
    eng = RuleEngine(Pack([low, off, high]))
    got = eng.feed(fact("on_phone", 10)) + eng.feed(transfer(20, 1)) + eng.feed(transfer(30, 2))
    assert [(iv.rule, iv.mode) for iv in got] == [("z-high", "enforce"), ("a-low", "shadow")]


def test_peek_changes_nothing() -> None:
    eng = engine(COACHED, SECOND)
    eng.feed(fact("on_phone", 70))
    eng.feed(fact("looking_around", 80, count=4))
    before = eng.export_state("ATM-1")
    trx = transfer(90, 400000)
    peeked = eng.peek(trx)
    assert [iv.rule for iv in peeked] == ["coached-transfer"]
    assert eng.peek(trx) == peeked  # nothing was consumed, no cooldown started
    assert eng.export_state("ATM-1") == before
    assert eng.feed(trx) == peeked
    assert eng.peek(trx) == []  # now a duplicate


def test_absence_any_and_nested_groups() -> None:
    quiet = """
rule: long-call-no-money
version: 2
severity: low
when:
  all:
    - event: on_phone
      where: {duration_s: {gte: 300}}
    - any:
        - event: looking_around
          where: {count: {gte: 3}}
        - event: gaze_away
  none:
    - event: transfer
    - event: withdrawal
  within: 10m
message: "{atm_id}: long call ({on_phone.duration_s:.0f}s), {looking_around.count} glances"
"""
    eng = engine(quiet)
    [iv] = eng.feed(fact("gaze_away", 100)) + eng.feed(fact("on_phone", 310))
    assert iv.evidence[1].startswith("gaze_away") and iv.message == "ATM-1: long call (310s), ? glances"
    # money moved at that ATM within the window: the quiet rule does not fire
    eng.feed(transfer(50, 1000, atm="A2"))
    assert fired(eng, fact("looking_around", 60, atm="A2", count=3), fact("on_phone", 320, atm="A2")) == []
    # a withdrawal long before the window does not block
    eng.feed(factories.bank_event("withdrawal", id="w1", bank_id="b", atm_id="A3", ts=T0, amount=5, payee_new=None,
                                  status="completed"))
    assert fired(eng, fact("looking_around", 900, atm="A3", count=3), fact("on_phone", 910, duration=400, atm="A3")) == [
        ("long-call-no-money", "A3")
    ]


def test_operators_on_real_durable() -> None:
    ops = """
rule: ops
version: 1
severity: low
when:
  any:
    - event: transfer
      as: ne
      where: {currency: {ne: KZT}}
    - event: transfer
      as: in
      where: {bank_id: {in: [halyk, kaspi]}, amount: {lt: 10}}
    - event: transfer
      as: notin
      where: {bank_id: {not_in: [halyk, kaspi, bank-1]}}
    - event: transfer
      as: rx
      where: {payee_ref: {matches: "^acc-\\\\d{3}$"}}
    - event: transfer
      as: absent
      where: {account_ref: null, amount: {gte: 1000000}}
message: "{rule}"
"""
    eng = engine(ops)

    def hits(**kw: Any) -> bool:
        kw.setdefault("amount", 500)
        return bool(eng.feed(transfer(0, atm=f"A{next(_ids)}", **kw)))

    assert hits(currency="USD") and not hits()
    assert hits(bank_id="kaspi", amount=5) and not hits(bank_id="kaspi", amount=50) and not hits(amount=5)
    assert hits(bank_id="bcc") and not hits(bank_id="halyk")
    assert hits(payee_ref="acc-123") and not hits(payee_ref="acc-1234") and not hits(payee_ref="xacc-123")
    assert not hits()  # no payee_ref at all: a condition on a missing field never matches
    assert hits(amount=2_000_000) and not hits(amount=2_000_000, account_ref="a1")


def test_missing_reference_field_does_not_poison() -> None:
    """durable error 311: a field used in a cross-reference missing from an event."""
    ref = """
rule: more-glances
version: 1
severity: low
when:
  all:
    - event: looking_around
      as: before
    - event: gaze_away
      where: {count: {gt: before.count}}
  within: 5m
message: "{before.count} -> {gaze_away.count}"
"""
    eng = engine(ref, COACHED, shards=1)  # one session for every key: a poisoned session would show
    assert fired(eng, fact("looking_around", 10), fact("gaze_away", 20)) == []  # neither has `count`
    assert fired(eng, fact("gaze_away", 30, atm="A2", count=5)) == []
    assert fired(eng, fact("looking_around", 40, atm="A3", count=2), fact("gaze_away", 50, atm="A3", count=4)) == [
        ("more-glances", "A3")
    ]
    assert fired(eng, fact("on_phone", 70), fact("looking_around", 80, count=4), transfer(90, 400000)) == [
        ("coached-transfer", "ATM-1")
    ]


def test_export_restore_roundtrip() -> None:
    a = engine(COACHED)
    a.feed(fact("on_phone", 70))
    a.feed(fact("looking_around", 80, count=4))
    state = KeyState.model_validate_json(a.export_state("ATM-1").model_dump_json())
    assert len(state.events) == 2 and len(state.seen) == 2
    b = engine(COACHED)
    b.restore_state("ATM-1", state)
    assert b.keys() == ["ATM-1"]
    assert fired(b, transfer(90, 400000)) == [("coached-transfer", "ATM-1")]
    # the cooldown mark travels too
    c = engine(COACHED)
    c.restore_state("ATM-1", b.export_state("ATM-1"))
    assert fired(c, fact("on_phone", 100), transfer(110, 500000)) == []
    assert fired(c, transfer(90, 400000, id=state.events[0]["id"])) == []  # seen ids travel


def test_sweep_drops_old_events_by_event_time() -> None:
    eng = engine(COACHED)
    eng.feed(fact("on_phone", 70))
    eng.feed(fact("looking_around", 80, count=4))
    assert eng.sweep(T0 + timedelta(seconds=70 + 299)) == 0
    assert eng.sweep(T0 + timedelta(seconds=75 + 300)) == 1  # the call is now older than the 5 min window
    assert [e["id"] for e in eng.export_state("ATM-1").events][0].startswith("looking_around")
    assert fired(eng, transfer(90, 400000)) == []  # a late bank event no longer finds the swept call
    assert eng.sweep(T0 + timedelta(hours=2)) == 2
    assert eng.keys() == []


def test_in_list_in_joined_pattern_keeps_window_and_join() -> None:
    """durable drops every condition after an `$or` inside a joined `$and`; `in:` must not lose them."""
    text = SECOND.replace("where: {amount: {gt: first.amount}}",
                          "where: {amount: {gt: first.amount}, status: {in: [initiated, completed]}}")
    eng = engine(text)
    eng.feed(fact("on_phone", 0))
    assert fired(eng, transfer(10, 100), transfer(10 + 11 * 60, 200)) == []  # 11 min apart: outside `within`
    assert fired(eng, fact("on_phone", 0, atm="A2"), transfer(5, 100, atm="A2"), transfer(6, 200, atm="A3")) == []
    assert fired(eng, transfer(7, 300, atm="A2", status="declined")) == []
    assert fired(eng, transfer(8, 300, atm="A2", status="completed")) == [("second-larger-transfer", "A2")]
