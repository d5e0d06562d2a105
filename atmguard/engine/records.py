"""The engine's state records: what the state table keeps per event and per published intervention.

The table is keyed by string prefixes and its values are small JSON objects. Both are read back
by Faust's table recovery after a restart, also by the next release of the engine, so their shape
is a storage format, kept exactly:

    e:<fact id>              {"k": <partition key>, "t": <event time, s>, "s": <arrival seq>, "p": <partition>, "v": <event JSON>}
    b:<bank id>:<event id>   the same, for a bank event (bank ids are unique per bank, not across banks)
    i:<intervention id>      {"k": <atm id>, "t": <event time of the intervention, s>, "p": <partition>}

The typed records below are what the engine's code passes around; `to_json`/`from_json` are the
only places that know the stored shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypedDict

from atmguard.core.contracts import BankEvent, BehaviorFact, Intervention

EVENT_PREFIXES = ("e:", "b:")
"""Table keys of processed events (facts, bank events)."""
PUBLISHED_PREFIX = "i:"
"""Table keys of interventions the broker acknowledged."""


class EventJSON(TypedDict):
    """The stored form of an `EventRecord`."""

    k: str
    t: float
    s: int
    p: int
    v: str


class PublishedJSON(TypedDict):
    """The stored form of a `PublishedMark`."""

    k: str
    t: float
    p: int


StoredJSON = EventJSON | PublishedJSON


def event_table_key(event: BehaviorFact | BankEvent) -> str:
    """The table key of a processed event: facts by id, bank events by bank and id."""
    if isinstance(event, BankEvent):
        return f"b:{event.bank_id}:{event.id}"
    return f"e:{event.id}"


def published_table_key(intervention_id: str) -> str:
    """The table key that says this intervention was acknowledged by the broker."""
    return PUBLISHED_PREFIX + intervention_id


def is_event_key(key: object) -> bool:
    """Whether a table key is one of a processed event (not a published mark)."""
    return isinstance(key, str) and key.startswith(EVENT_PREFIXES)


@dataclass(frozen=True, slots=True)
class EventRecord:
    """A processed event as kept for dedupe, expiry and the replay after a recovery."""

    key: str
    """The event's partitioning key (its ATM, or `bank:<bank id>`)."""
    ts: float
    """Its event time, epoch seconds: what expiry goes by."""
    seq: int
    """Arrival order, strictly increasing within a worker and across restarts: the replay's order."""
    partition: int
    value: str
    """The event's JSON as consumed, parsed again by the replay."""

    def to_json(self) -> EventJSON:
        return {"k": self.key, "t": self.ts, "s": self.seq, "p": self.partition, "v": self.value}

    @classmethod
    def from_json(cls, data: object) -> EventRecord | None:
        """The record of a stored value, or None when it is not one (a foreign or damaged value)."""
        if not isinstance(data, Mapping):
            return None
        value, partition, ts = data.get("v"), data.get("p"), data.get("t")
        if not isinstance(value, str) or not isinstance(partition, int) or not isinstance(ts, int | float):
            return None
        seq = data.get("s", 0)
        return cls(str(data.get("k", "")), float(ts), seq if isinstance(seq, int) else 0, partition, value)


@dataclass(frozen=True, slots=True)
class PublishedMark:
    """An intervention the broker acknowledged: a replay or a redelivery must not publish it again."""

    atm_id: str
    ts: float
    partition: int

    def to_json(self) -> PublishedJSON:
        return {"k": self.atm_id, "t": self.ts, "p": self.partition}

    @classmethod
    def of(cls, intervention: Intervention, partition: int) -> PublishedMark:
        return cls(intervention.atm_id, intervention.ts.timestamp(), partition)


def stored_partition(data: object) -> int | None:
    """The partition a stored value belongs to (None for a value that is not ours)."""
    if isinstance(data, Mapping):
        partition = data.get("p")
        return partition if isinstance(partition, int) else None
    return None


def stored_time(data: object) -> float | None:
    """The event time a stored value expires by (None for a value that is not ours)."""
    if isinstance(data, Mapping):
        ts = data.get("t")
        return float(ts) if isinstance(ts, int | float) else None
    return None


@dataclass(frozen=True, slots=True)
class Firing:
    """An intervention a rule made, and where its published mark goes."""

    intervention: Intervention
    partition: int
    event_ts: float | None
    """Event time of the event that completed the match; None for a replay (not latency)."""


@dataclass(frozen=True, slots=True)
class Source:
    """Where a record was read from (Faust's messages have the same attributes)."""

    topic: str
    partition: int
    offset: int
