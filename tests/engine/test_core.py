"""The engine core without a broker: dedupe, state records, expiry, recovery and publishing decisions.

The rules are the real RuleEngine (durable_rules) over the phone-transfer pack of tests/streamkit.py;
where a test needs to see or disturb what the rules are fed, it wraps the real engine.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from atmguard.core.contracts import BankEvent, BehaviorFact, Intervention
from atmguard.engine.core import EngineCore
from atmguard.engine.records import Source, StoredJSON
from atmguard.engine.rulebook import (
    Event,
    NoRules,
    RuleEngineLike,
    make_rule_engine,
    state_ttl_s,
)
from atmguard.rules.reload import load_pack
from atmguard.rules.ruleset import RuleSet
from tests.streamkit import T0, fact, transfer

FACTS, BANK = "atmguard.facts", "atmguard.bank"


class Changelog:
    """The changelog sink: every write the core wants the broker to see, in order."""

    def __init__(self) -> None:
        self.writes: list[tuple[int, str, StoredJSON | None]] = []

    def __call__(self, partition: int, key: str, value: StoredJSON | None) -> None:
        self.writes.append((partition, key, value))

    def tombstones(self) -> list[tuple[int, str]]:
        return [(p, k) for p, k, v in self.writes if v is None]


class Spy:
    """The real RuleEngine, recording what it is fed and swept with; it raises on the ids in `choke_on`."""

    def __init__(self, inner: RuleEngineLike, choke_on: frozenset[str] = frozenset()) -> None:
        self.inner, self.choke_on = inner, choke_on
        self.fed: list[str] = []
        self.sweeps: list[datetime] = []

    def feed(self, event: Event) -> list[Intervention]:
        self.fed.append(event.id)
        if event.id in self.choke_on:
            raise ValueError(f"the rules choke on {event.id}")
        return self.inner.feed(event)

    def swap(self, new_ruleset: RuleSet) -> None:
        self.inner.swap(new_ruleset)

    def sweep(self, now: datetime) -> int:
        self.sweeps.append(now)
        return self.inner.sweep(now)

    def close(self) -> None:
        self.inner.close()


@pytest.fixture
def ruleset(rules_dir: Path) -> RuleSet:
    loaded = load_pack(rules_dir)
    assert loaded is not None
    return loaded


@pytest.fixture
def cores() -> Iterator[list[EngineCore]]:
    """Cores made by a test; their rule engines are closed after it (durable keeps its rulesets)."""
    made: list[EngineCore] = []
    yield made
    for core in made:
        core.rule_engine.close()


def new_core(
    cores: list[EngineCore], ruleset: RuleSet | None = None, state: dict[str, Any] | None = None, **options: Any,
) -> tuple[EngineCore, dict[str, Any], Changelog]:
    state = {} if state is None else state
    changelog = Changelog()
    core = EngineCore(state, changelog, **options)
    core.install_rules(ruleset)
    cores.append(core)
    return core, state, changelog


_offsets: dict[str, int] = {}


def rec(event: BehaviorFact | BankEvent | bytes, partition: int = 0, topic: str | None = None) -> tuple[Source, bytes]:
    """A record as consumed: the event's JSON, from its topic at the next offset."""
    if isinstance(event, bytes):
        raw, topic = event, topic or FACTS
    else:
        raw, topic = event.to_json().encode(), topic or (FACTS if isinstance(event, BehaviorFact) else BANK)
    _offsets[topic] = _offsets.get(topic, -1) + 1
    return Source(topic, partition, _offsets[topic]), raw


def epoch(at: float) -> float:
    return (T0 + timedelta(seconds=at)).timestamp()


# --- dedupe and the state records ----------------------------------------------------------------


def test_a_duplicate_id_is_skipped_and_counted(cores: list[EngineCore], ruleset: RuleSet) -> None:
    core, _, _ = new_core(cores, ruleset)
    phone, trx = fact("ATM-D1", 100), transfer("ATM-D1", 110)
    first = core.process([rec(phone), rec(trx), rec(trx)])
    again = core.process([rec(phone), rec(trx)])  # redelivered after a rebalance
    assert first.admitted == 2 and first.duplicates == {BANK: 1}
    assert again.admitted == 0 and again.duplicates == {FACTS: 1, BANK: 1}
    assert [f.intervention.evidence for f in first.firings + again.firings] == [[phone.id, trx.id]]
    assert first.events_in == {(FACTS, "behavior"): 1, (BANK, "transfer"): 2}  # duplicates are events in too


def test_facts_and_bank_events_with_the_same_id_are_different_records(cores: list[EngineCore]) -> None:
    core, state, _ = new_core(cores)
    shared = "evt-7"
    out = core.process([
        rec(fact("ATM-S1", 100, id=shared)),
        rec(transfer("ATM-S1", 101, id=shared)),
        rec(transfer("ATM-S1", 102, id=shared).model_copy(update={"bank_id": "kaspi"})),
    ])
    assert out.admitted == 3 and out.duplicates == {}
    assert {"e:evt-7", "b:halyk:evt-7", "b:kaspi:evt-7"} <= state.keys()


def test_state_records_and_changelog_keep_the_stored_json_of_earlier_releases(cores: list[EngineCore]) -> None:
    core, state, changelog = new_core(cores, clock_ns=lambda: 1_000)
    phone = fact("ATM-J1", 100)
    raw = phone.to_json().encode()
    core.process([(Source(FACTS, 3, 41), raw)])
    expected = {"k": "ATM-J1", "t": epoch(100), "s": 1_001, "p": 3, "v": raw.decode()}
    assert state["e:" + phone.id] == expected
    assert changelog.writes == [(3, "e:" + phone.id, expected)]
    # byte for byte what the table's changelog carried before (key order included)
    assert json.dumps(changelog.writes[0][2], separators=(",", ":")) == (
        f'{{"k":"ATM-J1","t":{epoch(100)!r},"s":1001,"p":3,"v":{json.dumps(raw.decode())}}}'
    )


def test_a_record_that_breaks_the_contract_is_skipped_and_counted(cores: list[EngineCore], ruleset: RuleSet) -> None:
    core, state, _ = new_core(cores, ruleset)
    phone, trx = fact("ATM-X1", 100), transfer("ATM-X1", 101)
    out = core.process([
        rec(b'{"type": "behavior", "id": "x"}'), rec(phone), rec(b"not json", topic=BANK), rec(trx),
    ])
    assert out.invalid == {FACTS: 1, BANK: 1}
    assert out.admitted == 2 and len(out.firings) == 1  # the valid records of the batch go on
    assert set(state) == {"e:" + phone.id, "b:halyk:" + trx.id}


def test_arrival_sequence_increases_even_when_the_wall_clock_goes_back(cores: list[EngineCore]) -> None:
    clock = iter([5_000, 10])  # the second batch reads a clock set back
    core, state, _ = new_core(cores, clock_ns=lambda: next(clock))
    a, b, c = fact("ATM-Q1", 300), fact("ATM-Q1", 100), fact("ATM-Q1", 200)
    core.process([rec(a), rec(b)])
    core.process([rec(c)])
    seqs = [state["e:" + ev.id]["s"] for ev in (a, b, c)]
    assert seqs == [5_001, 5_002, 5_003]


# --- the rules -----------------------------------------------------------------------------------


def test_the_rules_raising_on_one_event_do_not_lose_the_batch(cores: list[EngineCore], ruleset: RuleSet) -> None:
    bad = fact("ATM-R1", 90)
    spy = Spy(make_rule_engine(ruleset), choke_on=frozenset({bad.id}))
    core, state, _ = new_core(cores, ruleset, rule_engines=lambda rs: spy)
    phone, trx = fact("ATM-R1", 100), transfer("ATM-R1", 110)
    out = core.process([rec(bad), rec(phone), rec(trx)])
    assert out.rule_failures == 1 and core.processed == 2
    assert [f.intervention.evidence for f in out.firings] == [[phone.id, trx.id]]
    assert "e:" + bad.id in state  # recorded: a redelivery of it is a duplicate, as before


def test_the_sweep_watermark_is_the_newest_event_time_minus_the_slack(
    cores: list[EngineCore], ruleset: RuleSet
) -> None:
    spy = Spy(make_rule_engine(ruleset))
    now = [0.0]
    core, _, _ = new_core(cores, ruleset, rule_engines=lambda rs: spy, sweep_interval_s=5.0, monotonic=lambda: now[0])
    core.process([rec(fact("ATM-W1", 400)), rec(fact("ATM-W2", 100))])
    assert spy.sweeps == []  # not due yet
    now[0] = 6.0
    core.process([rec(fact("ATM-W3", 200))])
    assert spy.sweeps == [T0 + timedelta(seconds=400 - 300)]


def test_rules_arriving_later_are_given_the_recent_events(cores: list[EngineCore], ruleset: RuleSet) -> None:
    core, _, _ = new_core(cores)  # started with an empty rules folder
    phone = fact("ATM-L1", 100)
    assert core.process([rec(phone)]).firings == []
    assert core.change_rules(ruleset) == "installed"
    assert core.change_rules(ruleset) == "unchanged"  # same digest: nothing to do
    trx = transfer("ATM-L1", 120)
    [firing] = core.process([rec(trx)]).firings
    assert firing.intervention.evidence == [phone.id, trx.id]


def test_without_rule_files_events_are_recorded_and_nothing_fires(cores: list[EngineCore], tmp_path: Path) -> None:
    assert load_pack(tmp_path) is None
    core, state, _ = new_core(cores, load_pack(tmp_path))
    assert isinstance(core.rule_engine, NoRules)
    phone, trx = fact("ATM-N1", 100), transfer("ATM-N1", 110)
    out = core.process([rec(phone), rec(trx)])
    assert out.firings == [] and core.processed == 2 and len(state) == 2


def test_the_state_ttl_covers_the_longest_rule_span(ruleset: RuleSet) -> None:
    # phone-transfer: within 5m, cooldown 10m
    assert state_ttl_s(600.0, ruleset) == 660.0
    assert state_ttl_s(900.0, ruleset) == 900.0
    assert state_ttl_s(600.0, None) == 600.0


# --- expiry --------------------------------------------------------------------------------------


def test_records_expire_by_event_time_per_partition(cores: list[EngineCore]) -> None:
    core, state, changelog = new_core(cores, dedupe_ttl_s=600.0)
    old0, old1 = fact("ATM-E0", 0), fact("ATM-E1", 0)
    core.process([rec(old0, partition=0), rec(old1, partition=1)])
    core.process([rec(fact("ATM-E0", 599), partition=0)])
    assert "e:" + old0.id in state  # within the TTL of its partition's newest event
    core.process([rec(fact("ATM-E0", 601), partition=0)])
    assert "e:" + old0.id not in state and changelog.tombstones() == [(0, "e:" + old0.id)]
    assert "e:" + old1.id in state  # partition 1's clock has not moved
    again = core.process([rec(old0, partition=0)])  # expired: its id is no longer known
    assert again.admitted == 1


def test_a_batch_of_late_events_does_not_turn_a_partition_clock_back(cores: list[EngineCore]) -> None:
    core, state, _ = new_core(cores, dedupe_ttl_s=600.0)
    core.process([rec(fact("ATM-E2", 700))])
    late, too_late = fact("ATM-E2", 650), fact("ATM-E2", 90)
    core.process([rec(late), rec(too_late)])
    assert "e:" + late.id in state
    assert "e:" + too_late.id not in state  # older than the clock (700) minus the TTL, not than 650 minus it


# --- publishing decisions ------------------------------------------------------------------------


def test_firings_already_published_or_in_flight_are_not_published_again(
    cores: list[EngineCore], ruleset: RuleSet
) -> None:
    core, state, changelog = new_core(cores, ruleset)
    [firing] = core.process([rec(fact("ATM-P1", 100), partition=2), rec(transfer("ATM-P1", 110), partition=2)]).firings
    iv = firing.intervention
    assert firing.partition == 2 and firing.event_ts == epoch(110)
    assert core.claim([firing]) == [firing]
    assert core.claim([firing]) == []  # being published
    core.release([firing])  # given up (e.g. fenced): unacknowledged, it may go again
    assert core.claim([firing]) == [firing]
    core.acknowledged(firing)
    core.release([firing])
    assert core.claim([firing]) == [] and core.published == 1
    mark = {"k": "ATM-P1", "t": iv.ts.timestamp(), "p": 2}
    assert state["i:" + iv.id] == mark and changelog.writes[-1] == (2, "i:" + iv.id, mark)


# --- recovery ------------------------------------------------------------------------------------


def test_a_firing_of_the_replay_never_acknowledged_is_returned_for_publishing(
    cores: list[EngineCore], ruleset: RuleSet
) -> None:
    first, state, _ = new_core(cores, ruleset)
    [firing] = first.process([rec(fact("ATM-U1", 100), partition=1), rec(transfer("ATM-U1", 110), partition=1)]).firings
    # the worker died before the broker acknowledged the intervention; the next one recovers the state
    second, _, _ = new_core(cores, ruleset, state=state)
    recovery = second.recover({0, 1})
    assert [(f.intervention, f.partition, f.event_ts) for f in recovery.pending] == [(firing.intervention, 1, None)]
    assert recovery.events == 2 and recovery.partitions == [0, 1]


def test_a_firing_acknowledged_before_the_restart_is_not_returned_by_the_replay(
    cores: list[EngineCore], ruleset: RuleSet
) -> None:
    first, state, _ = new_core(cores, ruleset)
    [firing] = first.process([rec(fact("ATM-U2", 100)), rec(transfer("ATM-U2", 110))]).firings
    first.claim([firing])
    first.acknowledged(firing)
    second, _, _ = new_core(cores, ruleset, state=state)
    assert second.recover({0}).pending == []
    later = second.process([rec(transfer("ATM-U2", 115))])  # the rule state came back: cooldown holds
    assert later.firings == []


def test_the_replay_feeds_recent_events_in_arrival_order(cores: list[EngineCore], ruleset: RuleSet) -> None:
    first, state, _ = new_core(cores, ruleset)
    trx, late_phone, other = transfer("ATM-O1", 200), fact("ATM-O1", 150), fact("ATM-O2", 10)
    first.process([rec(trx)])
    first.process([rec(late_phone), rec(other)])  # happened before the transfer, arrived after it
    # a dict's order is not the arrival order after a recovery (the changelog is read per partition)
    shuffled = dict(reversed(list(state.items())))
    spy = Spy(make_rule_engine(ruleset))
    second, _, _ = new_core(cores, ruleset, state=shuffled, rule_engines=lambda rs: spy)
    spy.fed.clear()
    [pending] = second.recover({0}).pending
    assert spy.fed == [trx.id, late_phone.id, other.id]
    assert pending.intervention.evidence == [late_phone.id, trx.id]


def test_records_of_revoked_partitions_are_dropped_without_tombstones(cores: list[EngineCore]) -> None:
    first, state, _ = new_core(cores)
    kept, moved = fact("ATM-V0", 100), fact("ATM-V1", 100)
    first.process([rec(kept, partition=0), rec(moved, partition=1)])
    second, _, changelog = new_core(cores, state=state)
    recovery = second.recover({0})
    assert set(state) == {"e:" + kept.id} and recovery.events == 1
    assert changelog.writes == []  # partition 1's new owner has those records


def test_state_written_by_an_earlier_release_is_recovered(cores: list[EngineCore], ruleset: RuleSet) -> None:
    """A running deployment upgrades: the state table it recovers was written by the old engine."""
    phone, trx = fact("ATM-G1", 100), transfer("ATM-G1", 110)
    stored: dict[str, Any] = {  # as Faust's table recovery decodes the old engine's changelog
        "e:" + phone.id: {"k": "ATM-G1", "t": epoch(100), "s": 7, "p": 2, "v": phone.to_json()},
        "b:halyk:" + trx.id: {"k": "ATM-G1", "t": epoch(110), "s": 8, "p": 2, "v": trx.to_json()},
    }
    core, state, _ = new_core(cores, ruleset, state=stored, dedupe_ttl_s=600.0)
    [pending] = core.recover({2}).pending
    assert pending.intervention.evidence == [phone.id, trx.id] and pending.partition == 2
    assert core.process([rec(phone, partition=2)]).duplicates == {FACTS: 1}
    core.process([rec(fact("ATM-G1", 100 + 700), partition=2)])  # the old records expire as they would have
    assert "e:" + phone.id not in state
