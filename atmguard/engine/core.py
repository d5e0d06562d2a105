"""The engine's decisions, apart from Faust and the broker: what a batch of records does to the state.

    raw records ─► parse ─► dedupe by id ─► state record (+ changelog write) ─► rules ─► firings
                                                    │
                      per-partition expiry by event time, the rules' sweep watermark

    firings ─► claim (not published before, not in flight) ─► [adapter publishes] ─► acknowledged (mark)
    assignment ─► recover: drop revoked partitions, replay recent events in arrival order into
                  fresh rules ─► the firings never acknowledged

The state is a mapping the core is given (Faust's `table.data` in production, a dict in tests)
holding the stored JSON of `atmguard.engine.records`; every write the broker must also see goes
to the changelog sink (partition, key, value or None for a tombstone), which the adapter batches.
Nothing here awaits: a batch is decided with no await in between, so a reload or a recovery (both
on the adapter's loop) comes between two batches, never inside one.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol

from atmguard.core.contracts import parse_event
from atmguard.core.errors import EventError
from atmguard.engine.expiry import ExpiryQueues
from atmguard.engine.records import (
    EventRecord,
    Firing,
    PublishedMark,
    StoredJSON,
    event_table_key,
    is_event_key,
    published_table_key,
    stored_partition,
    stored_time,
)
from atmguard.engine.rulebook import Event, NoRules, RuleEngineLike, make_rule_engine, state_ttl_s
from atmguard.kafka.topics import event_key

if TYPE_CHECKING:
    from atmguard.rules.ruleset import RuleSet

log = logging.getLogger("atmguard.engine")

SWEEP_SLACK_S = 300.0
"""Events older than (newest event time - this - the longest rule window) are dropped from rule state."""


class ChangelogSink(Protocol):
    """Takes the state writes the broker must see: a value, or None for a tombstone."""

    def __call__(self, partition: int, key: str, value: StoredJSON | None) -> None: ...


class Delivered(Protocol):
    """Where a record was read from (Faust's messages and `records.Source` have these)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...


RulesChange = Literal["unchanged", "installed", "swapped"]
"""What `change_rules` did: nothing (same digest), a fresh rule engine with its state replayed, or a swap."""


@dataclass(slots=True)
class BatchOutcome:
    """What one batch did, for the adapter's metrics and publishing."""

    firings: list[Firing] = field(default_factory=list)
    events_in: dict[tuple[str, str], int] = field(default_factory=dict)
    """Parsed records per (topic, event type), duplicates included."""
    duplicates: dict[str, int] = field(default_factory=dict)
    """Records per topic whose event id was processed before (skipped)."""
    invalid: dict[str, int] = field(default_factory=dict)
    """Records per topic that do not fit the contract (skipped)."""
    admitted: int = 0
    rule_failures: int = 0
    """Events the rules raised on (logged; the rest of the batch went on)."""


@dataclass(frozen=True, slots=True)
class Recovery:
    """What rebuilding the rule state after an assignment found."""

    partitions: list[int]
    events: int
    """Recent events replayed into the fresh rules."""
    pending: list[Firing]
    """Firings of the replay that were never acknowledged: to be published now."""


class EngineCore:
    """Dedupe, state records, expiry, the rules and the publishing decisions of one engine worker."""

    def __init__(
        self,
        state: MutableMapping[str, Any],
        changelog: ChangelogSink,
        *,
        dedupe_ttl_s: float = 600.0,
        sweep_interval_s: float = 5.0,
        rule_engines: Callable[[RuleSet | None], RuleEngineLike] = make_rule_engine,
        clock_ns: Callable[[], int] = time.time_ns,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.state = state
        self._changelog = changelog
        self.dedupe_ttl_s = dedupe_ttl_s
        self.sweep_interval_s = sweep_interval_s
        self._rule_engines = rule_engines
        self._clock_ns = clock_ns
        self._monotonic = monotonic
        self.ruleset: RuleSet | None = None
        self.rule_engine: RuleEngineLike = NoRules()
        self.ttl_s = dedupe_ttl_s
        self._expiry = ExpiryQueues()
        self._seq = 0
        self._latest_ts: datetime | None = None
        self._last_sweep = monotonic()
        self._inflight: set[str] = set()
        self.processed = 0
        """Events fed to the rules without an error."""
        self.published = 0
        """Interventions acknowledged by the broker."""

    # -- rules ------------------------------------------------------------------------------------

    def install_rules(self, ruleset: RuleSet | None) -> None:
        """Run a fresh rule engine over `ruleset` (its state starts empty; the caller closes the old one)."""
        engine = self._rule_engines(ruleset)  # first: if it cannot be made, nothing changes
        self.ruleset, self.rule_engine = ruleset, engine
        self.ttl_s = state_ttl_s(self.dedupe_ttl_s, ruleset)

    def change_rules(self, ruleset: RuleSet | None) -> RulesChange:
        """Put new rules in place between two batches (raises what compiling them raises; nothing changes then).

        From no rules to rules (or back) a fresh engine gets the recent events replayed; otherwise
        the running engine swaps, carrying its state over.
        """
        if ruleset is not None and self.ruleset is not None and self.ruleset.digest == ruleset.digest:
            return "unchanged"
        if ruleset is None or isinstance(self.rule_engine, NoRules):
            old = self.rule_engine
            self.install_rules(ruleset)
            self.replay(self.rule_engine)
            old.close()
            return "installed"
        self.rule_engine.swap(ruleset)
        self.ruleset = ruleset
        self.ttl_s = state_ttl_s(self.dedupe_ttl_s, ruleset)
        return "swapped"

    # -- a batch ----------------------------------------------------------------------------------

    def process(self, records: Sequence[tuple[Delivered, bytes | str]]) -> BatchOutcome:
        """Parse, dedupe and record a batch in the state, evaluate the rules on it; its firings to publish."""
        out = BatchOutcome()
        data = self.state
        seq = max(self._clock_ns(), self._seq)
        events_in: defaultdict[tuple[str, str], int] = defaultdict(int)
        duplicates: defaultdict[str, int] = defaultdict(int)
        invalid: defaultdict[str, int] = defaultdict(int)
        admitted: list[tuple[Event, int, float]] = []
        batch_max_ts: dict[int, float] = {}
        for source, raw in records:
            topic, partition = source.topic, source.partition
            try:
                ev: Event = parse_event(raw, source=f"{topic}[{partition}]@{source.offset}")
            except EventError as exc:
                invalid[topic] += 1
                log.warning("skipped a record that does not fit the contract: %s", exc)
                continue
            events_in[(topic, ev.type)] += 1
            rid = event_table_key(ev)
            if rid in data:
                duplicates[topic] += 1
                continue
            ts = ev.ts.timestamp()
            text = raw.decode() if isinstance(raw, bytes) else ev.to_json()
            seq += 1  # arrival order (the replay order), strictly increasing within and across batches
            self._put(partition, rid, EventRecord(event_key(ev), ts, seq, partition, text).to_json())
            admitted.append((ev, partition, ts))
            if ts > batch_max_ts.get(partition, float("-inf")):
                batch_max_ts[partition] = ts
            if self._latest_ts is None or ev.ts > self._latest_ts:
                self._latest_ts = ev.ts
        self._seq = seq
        out.events_in, out.duplicates, out.invalid = dict(events_in), dict(duplicates), dict(invalid)
        out.admitted = len(admitted)

        engine = self.rule_engine
        for ev, partition, ts in admitted:
            try:
                interventions = engine.feed(ev)
            except Exception:  # broad on purpose: one event the rules choke on must not lose the batch
                out.rule_failures += 1
                log.exception("rules failed on event %s (%s)", ev.id, ev.type)
                continue
            self.processed += 1
            out.firings.extend(Firing(iv, partition, ts) for iv in interventions)
        for partition, ts in batch_max_ts.items():
            self._expire(partition, ts)
        self._maybe_sweep()
        return out

    def _maybe_sweep(self) -> None:
        if self._latest_ts is None or self._monotonic() - self._last_sweep <= self.sweep_interval_s:
            return
        self._last_sweep = self._monotonic()
        # watermark: the newest event time minus a slack for late ATMs (skewed clocks, delays)
        self.rule_engine.sweep(self._latest_ts - timedelta(seconds=SWEEP_SLACK_S))

    # -- publishing decisions ---------------------------------------------------------------------

    def claim(self, firings: Iterable[Firing]) -> list[Firing]:
        """The firings to publish now: not acknowledged before, not being published; now in flight.

        Every claimed firing must be handed back to `release` whatever happens to its publishing.
        """
        data, inflight = self.state, self._inflight
        todo: list[Firing] = []
        for firing in firings:
            iid = firing.intervention.id
            if published_table_key(iid) in data or iid in inflight:
                continue
            inflight.add(iid)
            todo.append(firing)
        return todo

    def acknowledged(self, firing: Firing) -> None:
        """The broker acknowledged this firing: its published mark goes to the state (and changelog)."""
        iv = firing.intervention
        self.published += 1
        self._put(firing.partition, published_table_key(iv.id), PublishedMark.of(iv, firing.partition).to_json())

    def release(self, firings: Iterable[Firing]) -> None:
        """These firings are no longer being published (acknowledged, or given up to be replayed)."""
        for firing in firings:
            self._inflight.discard(firing.intervention.id)

    # -- recovery ---------------------------------------------------------------------------------

    def recover(self, active: set[int]) -> Recovery:
        """After the state was recovered for a new assignment: rebuild the rule state from it.

        Records of partitions no longer assigned are dropped (their new owner has them; no
        tombstone), the expiry queues are re-read, and the recent events are replayed in arrival
        order into a fresh rule engine, which replaces the running one.
        """
        data = self.state
        for key in [k for k, v in data.items() if isinstance(v, dict) and stored_partition(v) not in active]:
            data.pop(key, None)
        self._expiry.clear()
        for key, value in data.items():
            partition, ts = stored_partition(value), stored_time(value)
            if partition is not None and ts is not None:
                self._expiry.push(partition, ts, key)
                self._expiry.observe(partition, ts)
        fresh = self._rule_engines(self.ruleset)
        pending = self.replay(fresh, collect=True)
        old, self.rule_engine = self.rule_engine, fresh
        old.close()
        events = sum(1 for k in data if is_event_key(k))
        return Recovery(sorted(active), events, pending)

    def replay(self, engine: RuleEngineLike, *, collect: bool = False) -> list[Firing]:
        """Feed the state's recent events, in arrival order, to `engine`; `collect`: return the unpublished firings."""
        data = self.state
        records = sorted(
            (rec for key, value in data.items() if is_event_key(key) and (rec := EventRecord.from_json(value))),
            key=lambda rec: rec.seq,
        )
        pending: list[Firing] = []
        for rec in records:
            try:
                ev: Event = parse_event(rec.value)
            except EventError:
                continue
            for iv in engine.feed(ev):
                if collect and published_table_key(iv.id) not in data:
                    pending.append(Firing(iv, rec.partition, None))
        return pending

    # -- the state --------------------------------------------------------------------------------

    def _put(self, partition: int, key: str, value: StoredJSON) -> None:
        """Set a state key, queue its changelog write to *this* partition, and its expiry."""
        self.state[key] = value
        self._changelog(partition, key, value)
        self._expiry.push(partition, value["t"], key)

    def _expire(self, partition: int, ts: float) -> None:
        """Forget records of this partition older than the TTL (event time of the partition)."""
        self._expiry.observe(partition, ts)
        data = self.state
        for t, key in self._expiry.due(partition, self.ttl_s):
            value = data.get(key)
            # a stale entry: the key was written again later (a newer entry is queued) or moved
            if value is not None and stored_time(value) == t and stored_partition(value) == partition:
                data.pop(key, None)
                self._changelog(partition, key, None)
