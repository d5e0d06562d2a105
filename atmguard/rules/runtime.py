"""RuleEngine: the only module that imports durable_rules, and the wall around its quirks.

What the rest of atmguard sees is `feed/peek/swap/export_state/restore_state/keys/sweep/close`.
What this module does so that nobody else has to know (see ../shared/NOTES.md):

- Drives durable's C engine (`durable_rules_engine`) directly from the calling thread: no `Host`,
  so no background timer threads and no wall-clock anything. Firings are drained right after each
  assert with `start_action_for_state` / `complete_and_start_action`.
- Events are asserted as facts (see compiler.py), never consumed; each rule sees every event, and
  an event takes part in later firings too (cooldown decides what reaches people).
- Keys (ATMs) are sharded over `shards` sids (durable allows 1024 live sids per ruleset and its
  `delete_state` crashes, so sids are never deleted); the compiled rules join on the key.
- durable identifies a message by a 32-bit FNV-1a hash of its `id` per sid, and event ids like
  `trx-122789` / `trx-339192` collide; every event gets an internal id whose hash is checked
  against the live hashes of its sid, so no event is rejected or retracted by mistake.
- Nothing expires in durable: `sweep(now)` retracts events older than the longest window (event
  time); `feed` also sweeps by itself every `auto_sweep_every` events, keeping the longest window
  plus `lateness_s` behind the newest event time seen (an event arriving later than that after
  newer ones may miss partners that were already dropped).
- Cooldown, duplicate ids, supersede (same ATM, camera, track, behaviour), disabled rules,
  priorities and the explanation of each firing are handled here in Python.
- Only events some enabled rule tests are kept (for the longest window); a reload that adds a rule
  about another event starts from the next such event. `none:` (absence) is checked when a match
  completes, against the events seen so far; an event that arrives later does not undo a firing.
- durable cannot free a ruleset (`delete_ruleset` leaks its sessions): a reload that changes only
  messages, severities, actions, cooldowns or versions keeps the durable ruleset untouched; one that
  changes conditions moves the Python-side state over and re-asserts it in bulk, and the emptied
  old ruleset is kept for reuse when the same definition comes back (e.g. a rollback).

durable is not thread-safe (actions get lost when several threads post): every public method of
a RuleEngine holds the engine's lock, so calls from several threads are serialized and only one is
ever inside durable. Calls are synchronous and CPU-bound: from asyncio, call them from one task
(the Faust engine does) or a single worker thread, not concurrently from many.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import math
import string
import threading
import zlib
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from json.encoder import encode_basestring_ascii as _json_str
from typing import Any, Protocol

import durable_rules_engine as _dre
from pydantic import AwareDatetime, BaseModel, Field

from atmguard.core.contracts import (
    Actions,
    BankEvent,
    BehaviorFact,
    Intervention,
    MatchedEvent,
    intervention_id,
    parse_event,
)
from atmguard.core.errors import RuleError
from atmguard.rules.compiler import Branch, CompiledGroup, CompiledRule, compile_rules, durable_field
from atmguard.rules.schema import Rule

log = logging.getLogger(__name__)

Event = BehaviorFact | BankEvent
DEFAULT_KEY_FIELD = "atm_id"

@dataclass
class _Pooled:
    """A durable ruleset not in use: durable cannot free it, so it waits to be reused."""

    handle: int
    owner: int  # token of the _State whose facts it still holds (0: none)
    held: dict[str, str]  # internal id -> sid of the facts still asserted in it


_FREE: dict[str, list[_Pooled]] = {}
"""Durable rulesets not in use, by definition, shared by every engine of the process."""
_SERIAL = [0]
_TOKENS = itertools.count(1)
_POOL_LOCK = threading.Lock()

_FNV_OFFSET = 0x811C9DC5
_FNV_PRIME = 0x01000193
_OBSERVED = 2
_HEX_BYTES = tuple(b"0123456789abcdef")


def fnv1a32(text: str) -> int:
    """durable's message hash (`fnv1Hash32` in state.c: FNV-1a over C `char`, which is signed)."""
    h = _FNV_OFFSET
    for byte in text.encode("utf-8"):
        h ^= byte if byte < 0x80 else (byte - 0x100) & 0xFFFFFFFF
        h = (h * _FNV_PRIME) & 0xFFFFFFFF
    return h


def _hex_id_hash(state: _State, counter: int) -> int:
    """fnv1a32(format(counter, "x")) from the cached hash of all but the last hex digit.

    Internal ids are consecutive, so the prefix changes once every 16 ids (feed's hot path).
    """
    prefix = counter >> 4
    if prefix != state.fnv_prefix:
        state.fnv_prefix = prefix
        state.fnv_prefix_hash = fnv1a32(format(prefix, "x")) if prefix else _FNV_OFFSET
    return ((state.fnv_prefix_hash ^ _HEX_BYTES[counter & 15]) * _FNV_PRIME) & 0xFFFFFFFF


class RuleSetLike(Protocol):
    """What RuleEngine needs of a loaded rule set (atmguard.rules.RuleSet fits)."""

    @property
    def rules(self) -> Sequence[Rule]: ...

    @property
    def digest(self) -> str: ...


class KeyState(BaseModel):
    """Everything the engine remembers about one key: JSON-able, for a Faust changelog table."""

    key: str
    events: list[dict[str, Any]] = Field(default_factory=list, description="Live events, oldest first.")
    seen: dict[str, AwareDatetime] = Field(default_factory=dict, description="Recent event ids (duplicates are ignored).")
    cooldowns: dict[str, AwareDatetime] = Field(default_factory=dict, description="Rule -> time of its last intervention.")


# --------------------------------------------------------------------------- event -> durable message


def _event_name(event: Event) -> str:
    return event.behavior if isinstance(event, BehaviorFact) else event.type


def _field_value(event: Event, name: str) -> Any:
    # pydantic keeps field values in __dict__ and extras in __pydantic_extra__; getattr on a missing
    # name goes through pydantic's slow __getattr__, which costs more than the durable call itself
    value = event.__dict__.get(name)
    if value is None:
        extra = event.__pydantic_extra__
        if extra:
            value = extra.get(name)
    return value


def _json_value(value: Any) -> Any:
    """A field value as durable compares it: numbers, text, booleans; times as epoch seconds."""
    kind = type(value)
    if kind is float or kind is int or kind is str or kind is bool:
        return value
    if kind is Decimal:
        return float(value)
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, list | dict):
        return value
    return str(value)


def _json_text(value: Any) -> str:
    """JSON text of one field value (hand-rolled: the generic encoder is the slowest part of feed)."""
    kind = type(value)
    if kind is float:
        return repr(value) if math.isfinite(value) else "null"
    if kind is str:
        return str(_json_str(value))
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return str(value)
    if kind is Decimal:
        f = float(value)
        return repr(f) if math.isfinite(f) else "null"
    if kind is datetime:
        return repr(value.timestamp())
    return json.dumps(_json_value(value))


def _slot_of(event: Event) -> tuple[Any, ...] | None:
    """Updates of one behaviour (same ATM, camera, track, behaviour) supersede each other."""
    if isinstance(event, BehaviorFact):
        return (event.atm_id, event.camera_id, event.track_id, event.behavior)
    return None


# --------------------------------------------------------------------------- internal state


def _expired(state: _State, horizon: float) -> Iterator[tuple[str, str]]:
    """(key, internal id or "") of every queue and heap entry older than `horizon`, removed."""
    queue_ts, heap = state.queue_ts, state.heap
    ts_pop, key_pop, iid_pop = queue_ts.popleft, state.queue_key.popleft, state.queue_iid.popleft
    while queue_ts and queue_ts[0] < horizon:
        ts_pop()
        yield key_pop(), iid_pop()
    while heap and heap[0][0] < horizon:
        _t, _seq, key, iid = heapq.heappop(heap)
        yield key, iid


class _Live:
    __slots__ = ("event", "ext_id", "iid", "t", "key", "shard", "slot", "name", "msg", "mkey", "hash", "_dump")

    def __init__(
        self, event: Event, t: float, key: str, slot: tuple[Any, ...] | None, name: str, iid: str, shard: int, hash_: int
    ):
        self.event = event
        self.ext_id = event.id
        self.t = t
        self.key = key
        self.slot = slot
        self.name = name
        self.iid = iid  # internal id: the durable message id, its hash free in the shard's session
        self.shard = shard
        self.hash = hash_
        self.msg = ""  # the durable message
        self.mkey = ""  # which field projection `msg` was built with
        self._dump: dict[str, Any] | None = None

    def dump(self) -> dict[str, Any]:
        """The event as JSON data, computed once (evidence is often shared by several firings)."""
        if self._dump is None:
            self._dump = self.event.model_dump(mode="json", exclude_none=True)
        return dict(self._dump)


@dataclass(slots=True)
class _Key:
    live: dict[str, _Live] = field(default_factory=dict)  # iid -> live event
    slots: dict[tuple[Any, ...], str] = field(default_factory=dict)  # behaviour slot -> iid
    seen: dict[str, float] = field(default_factory=dict)  # external id -> ts
    cooldown: dict[str, float] = field(default_factory=dict)  # rule -> ts of last intervention

    def empty(self) -> bool:
        return not (self.live or self.seen or self.cooldown)


@dataclass
class _Shard:
    sid: str
    hashes: set[int]


@dataclass
class _State:
    """Python-side state of one correlation field; it outlives durable rulesets across reloads."""

    shards: list[_Shard]
    keys: dict[str, _Key] = field(default_factory=dict)
    by_iid: dict[str, _Live] = field(default_factory=dict)
    heap: list[tuple[float, int, str, str]] = field(default_factory=list)  # (ts, seq, key, iid or "")
    # live events arriving in event-time order expire first-in first-out: a queue, no heap work;
    # the heap keeps late arrivals and the seen/cooldown marks. The sweep drains both.
    # three parallel deques of untracked objects rather than one of tuples: nothing more for the
    # garbage collector to count and scan per event
    queue_ts: deque[float] = field(default_factory=deque)
    queue_key: deque[str] = field(default_factory=deque)
    queue_iid: deque[str] = field(default_factory=deque)
    queue_t: float = float("-inf")  # ts of the newest queue entry
    counter: int = 0
    shard_of: dict[str, int] = field(default_factory=dict)  # key -> shard index (crc32 once per key)
    token: int = field(default_factory=lambda: next(_TOKENS))
    fnv_prefix: int = -1  # cache of _hex_id_hash
    fnv_prefix_hash: int = _FNV_OFFSET


@dataclass
class _Group:
    """One durable ruleset (all rules of one `by` field) and the state it runs on."""

    compiled: CompiledGroup
    handle: int
    definition: str
    state: _State
    fields: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)  # event -> (field, json prefix)
    fields_key: str = ""
    # shards whose facts are not in this durable ruleset yet (after a reload): shard -> (facts of this
    # state the ruleset already holds, live events to bring in); synced on first use, or by sweep()
    pending: dict[int, tuple[dict[str, str], list[_Live]]] = field(default_factory=dict)
    # feed's hot path, precomputed: event name -> (fields to send, message text between key and `_e`);
    # an event name missing here is tested by no rule of the group (it skips durable entirely)
    route: dict[str, tuple[tuple[tuple[str, str], ...], str]] = field(default_factory=dict)
    heads: list[str] = field(default_factory=list)  # shard -> message text up to the internal id

    def __post_init__(self) -> None:
        self.fields = {
            event: tuple(sorted((f, ',"' + durable_field(f) + '":') for f in names))
            for event, names in self.compiled.fields_by_event.items()
        }
        self.fields_key = repr(sorted(self.fields.items()))
        self.route = {name: (self.fields.get(name, ()), '","_e":"' + name + '","_k":') for name in self.compiled.events}
        self.heads = ['{"sid":"' + shard.sid + '","id":"' for shard in self.state.shards]


class _View:
    """Attribute access to an event for message formatting (`{on_phone.duration_s:.0f}`)."""

    __slots__ = ("_event",)

    def __init__(self, event: Event):
        self._event = event

    def __getattr__(self, name: str) -> Any:
        event = self._event
        if name in type(event).model_fields or (event.__pydantic_extra__ and name in event.__pydantic_extra__):
            return _field_value(event, name)
        raise AttributeError(name)

    def __format__(self, spec: str) -> str:
        return format(self._event.id, spec)


class _Missing:
    def __format__(self, spec: str) -> str:
        return "?"


class _LenientFormatter(string.Formatter):
    """str.format that renders `?` for a name the match does not have (another `any:` case)."""

    def get_field(self, field_name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        try:
            return super().get_field(field_name, args, kwargs)
        except (KeyError, AttributeError, IndexError, TypeError):
            return _Missing(), field_name

    def format_field(self, value: Any, format_spec: str) -> str:
        try:
            return str(super().format_field(value, format_spec))
        except (ValueError, TypeError):
            return str(value)


_FORMATTER = _LenientFormatter()


@dataclass
class _Candidate:
    crule: CompiledRule
    branch: Branch
    evidence: list[_Live]
    key: str

    def rank(self) -> tuple[float, tuple[str, ...]]:
        """Freshest combination first; ties broken by evidence ids (deterministic replays)."""
        return (-min(x.t for x in self.evidence), tuple(x.ext_id for x in self.evidence))


# --------------------------------------------------------------------------- the engine


class RuleEngine:
    """Compiled rules over durable_rules, fed one event at a time in event time."""

    def __init__(
        self, ruleset: RuleSetLike, *, shards: int = 128, auto_sweep_every: int = 20_000, lateness_s: float = 120.0
    ):
        if not 1 <= shards <= 1000:
            raise ValueError("shards must be between 1 and 1000 (durable allows 1024 sessions per ruleset)")
        self._n_shards = shards
        self._auto_sweep_every = auto_sweep_every
        self._lateness = lateness_s
        self._fed = 0
        self._max_t = float("-inf")
        self._seq = 0
        self._closed = False
        self._lock = threading.Lock()  # one caller at a time inside durable (it is not thread-safe)
        self.digest = ruleset.digest
        self._compiled = compile_rules(list(ruleset.rules))
        self._groups: dict[str, _Group] = {}
        try:
            for by, cgroup in self._compiled.groups.items():
                state = self._new_state()
                handle, definition, _held = self._acquire(cgroup, state)
                self._groups[by] = _Group(cgroup, handle, definition, state)
        except RuleError:
            for group in self._groups.values():
                self._release(group.handle, group.definition, 0, {})
            raise

    # ------------------------------------------------------------------ durable rulesets

    def _acquire(self, cgroup: CompiledGroup, state: _State) -> tuple[int, str, dict[str, str]]:
        """A durable ruleset for this definition, and the facts of `state` it still holds (reuse)."""
        definition = cgroup.definition_json
        with _POOL_LOCK:
            free = _FREE.get(definition)
            pick = next((p for p in free if p.owner == state.token), free[-1]) if free else None
            if free and pick is not None:
                free.remove(pick)
        if pick is not None:
            if pick.owner != state.token and pick.held:
                self._retract_ids(pick.handle, pick.held)  # another state's facts: empty it first
                pick.held = {}
            return pick.handle, definition, pick.held
        _SERIAL[0] += 1
        try:
            handle = _dre.create_ruleset(f"atmguard-{_SERIAL[0]}", definition)
        except Exception as exc:  # noqa: BLE001 - durable raises bare Exception("Could not create ruleset, error code: N")
            raise RuleError(f"rules correlated by {cgroup.by!r} cannot be compiled by durable_rules: {exc}") from None
        return handle, definition, {}

    @staticmethod
    def _release(handle: int, definition: str, owner: int, held: dict[str, str]) -> None:
        with _POOL_LOCK:
            _FREE.setdefault(definition, []).append(_Pooled(handle, owner, held))

    def _retract_ids(self, handle: int, held: Mapping[str, str]) -> None:
        by_sid: dict[str, list[str]] = {}
        for iid, sid in held.items():
            by_sid.setdefault(sid, []).append(iid)
        for sid, iids in by_sid.items():
            text = "[" + ",".join(f'{{"sid":"{sid}","id":"{i}"}}' for i in iids) + "]"
            res = _dre.retract_facts(handle, text)
            self._drain(handle, res[1])  # firings a retraction re-enables are not new matches

    def _new_state(self) -> _State:
        # durable asserts its own state message with id "sid-<sid>" in every session
        return _State(shards=[_Shard(str(i), {fnv1a32(f"sid-{i}")}) for i in range(self._n_shards)])

    @staticmethod
    def _drain(handle: int, state: int) -> list[str]:
        """Every queued firing of one durable session, completed so the session stays unlocked."""
        res = _dre.start_action_for_state(handle, state)
        if not res:
            return []
        out = [res[1]]
        while msg := _dre.complete_and_start_action(handle, state):
            out.append(msg)
        return out

    @staticmethod
    def _posted(group: _Group) -> dict[str, str]:
        """Internal id -> sid of every fact of the group's state that its durable ruleset holds."""
        shards, pending = group.state.shards, group.pending
        out = {x.iid: shards[x.shard].sid for x in group.state.by_iid.values() if x.shard not in pending}
        for held, _lives in pending.values():
            out.update(held)
        return out

    # ------------------------------------------------------------------ live events

    def _shard_index(self, key: str) -> int:
        return zlib.crc32(key.encode()) % self._n_shards

    def _new_live(
        self, group: _Group, event: Event, t: float, key: str, slot: tuple[Any, ...] | None, name: str, shard_i: int
    ) -> _Live:
        """A live event with an internal id whose hash is free in its session, and its durable message."""
        state = group.state
        hashes = state.shards[shard_i].hashes
        counter = state.counter + 1
        while True:
            h = _hex_id_hash(state, counter)
            if h not in hashes:
                break
            counter += 1  # this id's hash is taken in the session: durable would reject it
        state.counter = counter
        hashes.add(h)
        iid = format(counter, "x")
        live = _Live(event, t, key, slot, name, iid, shard_i, h)
        live.msg, live.mkey = self._message(group, live), group.fields_key
        state.by_iid[iid] = live
        return live

    @staticmethod
    def _message(group: _Group, live: _Live) -> str:
        """The durable message of a live event: its ids, name, key and time, then the fields the rules test."""
        route = group.route.get(live.name)
        if route is None:  # an event kept from before a reload that no rule of the group tests any more
            route = (group.fields.get(live.name, ()), '","_e":"' + live.name + '","_k":')
        fields, mid = route
        iid = live.iid
        head = f'{group.heads[live.shard]}{iid}","_i":"{iid}{mid}{_json_str(live.key)},"_t":{live.t!r}'
        if not fields:
            return head + "}"
        ev = live.event
        values = ev.__dict__
        extra = ev.__pydantic_extra__
        parts = [head]
        for fname, prefix in fields:
            value = values.get(fname)
            if value is None and extra:
                value = extra.get(fname)
            if value is not None:
                parts.append(prefix)
                parts.append(_json_text(value))
        parts.append("}")
        return "".join(parts)

    def _add(self, state: _State, kstate: _Key, live: _Live) -> None:
        """Keep a live event in its key's state and in the expiry order."""
        kstate.live[live.iid] = live
        if live.slot is not None:
            kstate.slots[live.slot] = live.iid
        if live.t >= state.queue_t:
            state.queue_t = live.t
            state.queue_ts.append(live.t)
            state.queue_key.append(live.key)
            state.queue_iid.append(live.iid)
        else:
            self._seq += 1
            heapq.heappush(state.heap, (live.t, self._seq, live.key, live.iid))

    def _unplace(self, group: _Group, live: _Live, *, retract: bool) -> None:
        state = group.state
        state.by_iid.pop(live.iid, None)
        if retract:
            sid = state.shards[live.shard].sid
            # firings a retraction re-enables (a `none:` pattern unblocked) stay queued in the session and
            # are dropped at its next drain: they do not contain the event being fed (see _candidates)
            _dre.retract_fact(group.handle, f'{{"sid":"{sid}","id":"{live.iid}"}}')
        state.shards[live.shard].hashes.discard(live.hash)

    def _remove(self, group: _Group, kstate: _Key, live: _Live) -> None:
        kstate.live.pop(live.iid, None)
        if live.slot is not None and kstate.slots.get(live.slot) == live.iid:
            del kstate.slots[live.slot]
        self._unplace(group, live, retract=True)

    # ------------------------------------------------------------------ feed / peek

    @property
    def horizon_s(self) -> float:
        """How long (event time) events are kept: the longest `within` of the enabled rules."""
        return self._compiled.horizon

    def feed(self, event: Event) -> list[Intervention]:
        """Add one event; the interventions it completes (a duplicate id gives nothing)."""
        with self._lock:
            self._check_open()
            out = self._process(event, commit=True)
            self._fed += 1
            if self._auto_sweep_every and self._fed % self._auto_sweep_every == 0:
                self._sweep_before(self._max_t - self._compiled.horizon - self._lateness, self._max_t)
            return out

    def peek(self, event: Event) -> list[Intervention]:
        """What feeding this event would fire now, leaving every state unchanged (hold advice)."""
        with self._lock:
            self._check_open()
            return self._process(event, commit=False)

    def _process(self, event: Event, *, commit: bool) -> list[Intervention]:
        """feed (commit) and peek (commit off: the event is asserted, its firings read, then retracted)."""
        t = event.ts.timestamp()
        if commit and t > self._max_t:
            self._max_t = t
        values = event.__dict__
        extra = event.__pydantic_extra__
        name = event.behavior if event.type == "behavior" else event.type
        slot = _slot_of(event)
        candidates: list[_Candidate] | None = None
        for group in self._groups.values():
            if name not in group.route:
                continue  # no rule tests this event: nothing to keep (a reload adding one starts afresh)
            by = group.compiled.by
            # pydantic keeps fields in __dict__ and extras apart (see _field_value; this is the hot path)
            raw = values.get(by)
            if raw is None and extra:
                raw = extra.get(by)
            if raw is None:
                continue  # this rule set correlates by a field the event does not carry
            found = self._process_group(group, event, name, raw if type(raw) is str else str(raw), t, slot, commit)
            if found:
                if candidates is None:
                    candidates = found
                else:
                    candidates.extend(found)
        if not candidates:
            return []
        return self._interventions(event, t, candidates, commit)

    def _process_group(
        self, group: _Group, event: Event, name: str, key: str, t: float, slot: tuple[Any, ...] | None, commit: bool
    ) -> list[_Candidate] | None:
        state = group.state
        kstate = state.keys.get(key)
        old: _Live | None = None
        if kstate is not None:
            if event.id in kstate.seen:
                return None  # duplicate id: already taken into account
            if slot is not None:
                old_iid = kstate.slots.get(slot)
                if old_iid is not None:
                    old = kstate.live[old_iid]
                    slot = old.slot  # the equal tuple already kept: one object fewer per update
                    if old.t > t:
                        # an older update arriving late: the newer one already stands for the behaviour
                        if commit:
                            kstate.seen[event.id] = t
                            self._seq += 1
                            heapq.heappush(state.heap, (t, self._seq, key, ""))
                        return None
        shard_i = state.shard_of.get(key)
        if shard_i is None:
            shard_i = self._shard_index(key)
            if commit:
                state.shard_of[key] = shard_i  # crc32 once per key
        if group.pending and shard_i in group.pending:
            self._sync(group, shard_i)
        if commit:
            if kstate is None:
                kstate = state.keys[key] = _Key()
            kstate.seen[event.id] = t
            if old is not None:
                self._remove(group, kstate, old)  # a newer update supersedes the older one
            live = self._new_live(group, event, t, key, slot, name, shard_i)
            self._add(state, kstate, live)
        else:
            live = self._new_live(group, event, t, key, slot, name, shard_i)
        try:
            fired = self._assert(group, live)
            return self._candidates(group, fired, live.iid, key) if fired else None
        finally:
            if not commit:
                self._unplace(group, live, retract=True)  # peek: the session and state are as they were

    def _assert(self, group: _Group, live: _Live) -> list[str]:
        try:
            code, sstate = _dre.assert_fact(group.handle, live.msg)
            if code == _OBSERVED:  # cannot happen with checked ids; never lose an event silently
                raise RuntimeError(f"durable rejected internal id {live.iid} as already observed")
            return self._drain(group.handle, sstate)
        except Exception:  # noqa: BLE001 - durable raises bare Exception; the event is taken back out, never half-asserted
            self._assert_failed(group, live)
            return []

    def _assert_failed(self, group: _Group, live: _Live) -> None:
        log.exception("durable_rules failed on event %s (key %s); it takes no part in matches", live.ext_id, live.key)
        try:  # never leave it pending in the session (durable would fail every later event there)
            sid = group.state.shards[live.shard].sid
            self._drain(group.handle, _dre.retract_fact(group.handle, f'{{"sid":"{sid}","id":"{live.iid}"}}')[1])
        except Exception:  # durable raises bare Exception; a failed retract is logged, the sweep goes on
            log.exception("durable_rules could not retract event %s", live.ext_id)

    def _candidates(self, group: _Group, fired: list[str], iid: str, key: str) -> list[_Candidate]:
        out: list[_Candidate] = []
        by_iid = group.state.by_iid
        branches = group.compiled.branches
        for text in fired:
            for dname, frames in json.loads(text).items():
                entry = branches.get(dname)
                if entry is None:
                    continue
                crule, branch = entry
                ids = [frames[f"p{i}"]["id"] for i in range(len(branch.patterns))]
                if iid not in ids:
                    continue  # re-enabled by a retraction, not completed by this event
                lives = [by_iid[i] for i in ids if i in by_iid]
                if len(lives) == len(ids):
                    out.append(_Candidate(crule, branch, lives, key))
        return out

    def _interventions(self, event: Event, t: float, candidates: list[_Candidate], commit: bool) -> list[Intervention]:
        best: dict[str, _Candidate] = {}
        for cand in candidates:
            name = cand.crule.rule.rule
            cur = best.get(name)
            if cur is None or cand.rank() < cur.rank():
                best[name] = cand
        out: list[tuple[int, str, Intervention]] = []
        for name, cand in best.items():
            group = self._groups[cand.crule.by]
            kstate = group.state.keys.get(cand.key)
            cooldown = cand.crule.cooldown
            if kstate is not None and cooldown > 0:
                last = kstate.cooldown.get(name)
                if last is not None and abs(t - last) < cooldown:
                    continue
                if commit:
                    kstate.cooldown[name] = t
                    # wake the sweep when the mark can go (heap times compare with now - horizon)
                    self._seq += 1
                    heapq.heappush(group.state.heap, (t + cooldown - self._compiled.horizon, self._seq, cand.key, ""))
            out.append((-cand.crule.rule.priority, name, self._intervention(event, cand)))
        out.sort(key=lambda x: (x[0], x[1]))
        return [iv for _, _, iv in out]

    def _intervention(self, event: Event, cand: _Candidate) -> Intervention:
        rule = cand.crule.rule
        key = cand.key
        evidence = [x.ext_id for x in cand.evidence]
        atm_id = key
        if cand.crule.by != DEFAULT_KEY_FIELD:
            atm_id = next((str(a) for a in (_field_value(x.event, "atm_id") for x in cand.evidence) if a), key)
        names: dict[str, Any] = {
            "rule": rule.rule, "version": rule.version, "severity": rule.severity, "mode": rule.mode,
            "key": key, "atm_id": atm_id, "ts": event.ts,
        }
        for pattern, live in zip(cand.branch.patterns, cand.evidence, strict=True):
            names[pattern.name] = _View(live.event)
        try:
            message = rule.message.format_map(names)
        except (KeyError, AttributeError, IndexError, TypeError, ValueError):
            try:  # a name this match lacks (another `any:` case) renders as `?`
                message = _FORMATTER.vformat(rule.message, (), names)
            except (ValueError, IndexError):
                message = rule.message
        acts = rule.actions
        # model_construct: every value below is already of its contract type (validated rule, validated
        # events), and validating the nested models again cost more than the rest of a firing
        return Intervention.model_construct(
            id=intervention_id(rule.rule, rule.version, key, evidence),
            rule=rule.rule,
            rule_version=rule.version,
            severity=rule.severity,
            mode=rule.mode,
            atm_id=atm_id,
            ts=event.ts,
            evidence=evidence,
            actions=Actions.model_construct(
                sms=list(acts.sms), radio=list(acts.radio), webhook=list(acts.webhook), hold=bool(acts.hold)
            ),
            message=message,
            key=key,
            matched=[
                MatchedEvent.model_construct(pattern=p.name, event_id=x.ext_id, event=x.dump())
                for p, x in zip(cand.branch.patterns, cand.evidence, strict=True)
            ],
        )

    # ------------------------------------------------------------------ sweeping

    def sweep(self, now: datetime) -> int:
        """Drop events older than the longest window before `now` (event time); returns how many."""
        with self._lock:
            self._check_open()
            for group in self._groups.values():
                self._sync_all(group)  # a maintenance point: finish any reload's catch-up too
            return self._sweep_before(now.timestamp() - self._compiled.horizon, now.timestamp())

    def _sweep_before(self, horizon: float, now: float) -> int:
        dropped = 0
        longest_cooldown = self._compiled.max_cooldown
        for group in self._groups.values():
            state = group.state
            retract: dict[str, str] = {}
            touched: set[str] = set()
            keys_get, by_iid_pop, shards = state.keys.get, state.by_iid.pop, state.shards
            for key, iid in _expired(state, horizon):
                kstate = keys_get(key)
                if kstate is None:
                    continue
                touched.add(key)
                live = kstate.live.pop(iid, None) if iid else None
                if live is None:
                    continue
                dropped += 1
                if live.slot is not None and kstate.slots.get(live.slot) == iid:
                    del kstate.slots[live.slot]
                by_iid_pop(iid, None)
                shard = shards[live.shard]
                shard.hashes.discard(live.hash)
                retract[iid] = shard.sid
            if retract:
                self._retract_ids(group.handle, retract)
            for key in touched:
                kstate = state.keys[key]
                kstate.seen = {i: ts for i, ts in kstate.seen.items() if ts >= horizon}
                if kstate.cooldown:
                    kstate.cooldown = {r: ts for r, ts in kstate.cooldown.items() if now - ts < longest_cooldown}
                if kstate.empty():
                    del state.keys[key]
                    state.shard_of.pop(key, None)
        return dropped

    # ------------------------------------------------------------------ keys and state

    def _split_key(self, key: str) -> tuple[_Group | None, str]:
        for by, group in self._groups.items():
            if by != DEFAULT_KEY_FIELD and key.startswith(by + "="):
                return group, key[len(by) + 1 :]
        return self._groups.get(DEFAULT_KEY_FIELD), key

    def keys(self) -> list[str]:
        """Keys with state; keys of rules correlated by another field than atm_id read `field=value`."""
        with self._lock:
            return self._keys_unlocked()

    def _keys_unlocked(self) -> list[str]:
        out: list[str] = []
        for by, group in self._groups.items():
            prefix = "" if by == DEFAULT_KEY_FIELD else by + "="
            out.extend(prefix + k for k in group.state.keys)
        return sorted(out)

    def export_state(self, key: str) -> KeyState:
        """Recent events, seen ids and cooldown marks of one key, as JSON-able data."""
        with self._lock:
            return self._export_state_unlocked(key)

    def _export_state_unlocked(self, key: str) -> KeyState:
        self._check_open()
        group, value = self._split_key(key)
        kstate = group.state.keys.get(value) if group else None
        if kstate is None:
            return KeyState(key=key)
        lives = sorted(kstate.live.values(), key=lambda x: (x.t, x.ext_id))

        def dt(ts: float) -> datetime:
            return datetime.fromtimestamp(ts, tz=UTC)

        return KeyState(
            key=key,
            events=[x.event.model_dump(mode="json", exclude_none=True) for x in lives],
            seen={i: dt(ts) for i, ts in kstate.seen.items()},
            cooldowns={r: dt(ts) for r, ts in kstate.cooldown.items()},
        )

    def restore_state(self, key: str, state: KeyState) -> None:
        """Replace one key's state with an exported one (after a rebalance), firing nothing."""
        with self._lock:
            self._restore_state_unlocked(key, state)

    def _restore_state_unlocked(self, key: str, state: KeyState) -> None:
        self._check_open()
        group, value = self._split_key(key)
        if group is None:
            return
        old = group.state.keys.pop(value, None)
        if old is not None:
            for live in list(old.live.values()):
                self._remove(group, old, live)
        kstate = group.state.keys[value] = _Key()
        events = sorted((parse_event(e) for e in state.events), key=lambda e: (e.ts, e.id))
        self._post_bulk(group, {value: events})
        for ext_id, ts in state.seen.items():
            kstate.seen[ext_id] = ts.timestamp()
            self._seq += 1
            heapq.heappush(group.state.heap, (ts.timestamp(), self._seq, value, ""))
        for rule_name, ts in state.cooldowns.items():
            kstate.cooldown[rule_name] = ts.timestamp()
            self._seq += 1
            heapq.heappush(group.state.heap, (ts.timestamp() + self._compiled.max_cooldown - self._compiled.horizon,
                                              self._seq, value, ""))
        if kstate.empty():
            del group.state.keys[value]

    def _post_bulk(self, group: _Group, events_by_key: Mapping[str, Iterable[Event]]) -> None:
        """Add events (each key's in event-time order) without collecting firings: restore, reload."""
        state = group.state
        new: dict[str, _Live] = {}
        for key, events in events_by_key.items():
            kstate = state.keys.setdefault(key, _Key())
            for event in events:
                if event.id in kstate.seen or _event_name(event) not in group.compiled.events:
                    continue
                t = event.ts.timestamp()
                kstate.seen[event.id] = t
                slot = _slot_of(event)
                old_iid = kstate.slots.get(slot) if slot is not None else None
                if old_iid is not None:
                    old = kstate.live[old_iid]
                    if old.t > t:
                        continue
                    if old_iid in new:
                        self._drop_new(group, kstate, new.pop(old_iid))
                    else:
                        self._remove(group, kstate, old)
                shard_i = state.shard_of.get(key)
                if shard_i is None:
                    shard_i = state.shard_of[key] = self._shard_index(key)
                live = self._new_live(group, event, t, key, slot, _event_name(event), shard_i)
                self._add(state, kstate, live)
                new[live.iid] = live
        self._assert_all(group, new.values())

    def _drop_new(self, group: _Group, kstate: _Key, live: _Live) -> None:
        """Forget a live event placed in this bulk but not yet asserted."""
        kstate.live.pop(live.iid, None)
        self._unplace(group, live, retract=False)

    def _assert_all(self, group: _Group, lives: Iterable[_Live]) -> None:
        batches: dict[int, list[str]] = {}
        for live in lives:
            batches.setdefault(live.shard, []).append(live.msg)
        for shard_i, texts in batches.items():
            if shard_i in group.pending:
                self._sync(group, shard_i)
            res = _dre.assert_facts(group.handle, "[" + ",".join(texts) + "]")
            self._drain(group.handle, res[1])

    def _sync(self, group: _Group, shard_i: int) -> None:
        """Bring one shard of a durable ruleset up to date with the state (after a reload)."""
        held, lives = group.pending.pop(shard_i)
        by_iid = group.state.by_iid
        stale = {iid: sid for iid, sid in held.items() if iid not in by_iid}
        if stale:
            self._retract_ids(group.handle, stale)  # before asserting: a new id may share a stale one's hash
        fresh = [x for x in lives if x.iid in by_iid and x.iid not in held]
        if fresh:
            for live in fresh:
                if live.mkey != group.fields_key:
                    live.msg, live.mkey = self._message(group, live), group.fields_key
            res = _dre.assert_facts(group.handle, "[" + ",".join(x.msg for x in fresh) + "]")
            self._drain(group.handle, res[1])

    def _sync_all(self, group: _Group) -> None:
        for shard_i in list(group.pending):
            self._sync(group, shard_i)

    # ------------------------------------------------------------------ reload

    def swap(self, new_ruleset: RuleSetLike) -> None:
        """Hot reload: compile the new rules and carry every key's state over, atomically.

        On a compile error (RuleError) nothing changes. Rule sets whose durable definition did not
        change keep their durable ruleset and state as they are. The others move their state to a
        durable ruleset for the new definition: a new one gets every live event in bulk; one reused
        from an earlier reload (e.g. a rollback) only gets what changed since it was left.
        """
        with self._lock:
            self._swap_unlocked(new_ruleset)

    def _swap_unlocked(self, new_ruleset: RuleSetLike) -> None:
        self._check_open()
        compiled = compile_rules(list(new_ruleset.rules))
        acquired: dict[str, tuple[int, str, dict[str, str], _State]] = {}
        try:
            for by, cgroup in compiled.groups.items():
                old = self._groups.get(by)
                if old is None or old.definition != cgroup.definition_json:
                    state = old.state if old is not None else self._new_state()
                    acquired[by] = (*self._acquire(cgroup, state), state)
        except RuleError:
            for handle, definition, held, state in acquired.values():
                self._release(handle, definition, state.token, held)
            raise
        # Nothing below depends on the new rules being valid: build, switch, then retire.
        groups: dict[str, _Group] = {}
        retire: list[tuple[int, str, int, dict[str, str]]] = []
        old_events: dict[str, Event] | None = None
        for by, cgroup in compiled.groups.items():
            old = self._groups.get(by)
            if by not in acquired:
                assert old is not None
                groups[by] = _Group(cgroup, old.handle, old.definition, old.state, pending=old.pending)
                continue
            handle, definition, held, state = acquired[by]
            group = groups[by] = _Group(cgroup, handle, definition, state)
            if old is not None:
                retire.append((old.handle, old.definition, state.token, self._posted(old)))
                self._schedule(group, held)
                continue
            if old_events is None:
                old_events = {}
                for g in self._groups.values():
                    for live in g.state.by_iid.values():
                        old_events.setdefault(live.ext_id, live.event)
            per_key: dict[str, list[Event]] = {}
            for ev in old_events.values():
                raw = _field_value(ev, by)
                if raw is not None:
                    per_key.setdefault(str(raw), []).append(ev)
            for evs in per_key.values():
                evs.sort(key=lambda e: (e.ts, e.id))
            self._post_bulk(group, per_key)
        for by, old in self._groups.items():
            if by not in compiled.groups:
                retire.append((old.handle, old.definition, old.state.token, self._posted(old)))
        self._groups = groups
        self._compiled = compiled
        self.digest = new_ruleset.digest
        for handle, definition, owner, held in retire:
            # kept as it is: reusing it for the same state later only needs the difference
            self._release(handle, definition, owner, held)

    def _schedule(self, group: _Group, held: dict[str, str]) -> None:
        """Mark every shard of a moved state for syncing into the group's new durable ruleset.

        The durable work (asserting the live events, or only the difference when the ruleset is
        reused) happens per shard on its first use after the reload, or in sweep(): the reload
        itself stays well under a second with 10,000 ATMs of state.
        """
        lives: dict[int, list[_Live]] = {}
        for live in group.state.by_iid.values():
            lives.setdefault(live.shard, []).append(live)
        helds: dict[int, dict[str, str]] = {}
        for iid, sid in held.items():
            helds.setdefault(int(sid), {})[iid] = sid
        group.pending = {i: (helds.get(i, {}), lives.get(i, [])) for i in set(lives) | set(helds)}

    # ------------------------------------------------------------------ lifecycle

    def stats(self) -> dict[str, int]:
        """Counts for metrics and benchmarks: keys, live events, emptied durable rulesets kept."""
        return {
            "keys": sum(len(g.state.keys) for g in self._groups.values()),
            "live_events": sum(len(g.state.by_iid) for g in self._groups.values()),
            "durable_rulesets_free": sum(len(v) for v in _FREE.values()),
            "shards_to_sync": sum(len(g.pending) for g in self._groups.values()),
        }

    def close(self) -> None:
        """Empty this engine's durable rulesets and keep them for reuse (durable cannot free them)."""
        with self._lock:
            self._close_unlocked()

    def _close_unlocked(self) -> None:
        if self._closed:
            return
        for group in self._groups.values():
            self._retract_ids(group.handle, self._posted(group))
            self._release(group.handle, group.definition, 0, {})
        self._groups = {}
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this RuleEngine is closed")

    def __enter__(self) -> RuleEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["KeyState", "RuleEngine", "fnv1a32"]
