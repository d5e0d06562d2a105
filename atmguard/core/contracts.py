"""Every record that crosses a boundary: behaviour fact, bank event, intervention.

These pydantic models are the contracts between detectors, the stream, the rules, the
notifier, the gateway and the banks. Each event is one JSON object (one per line in
JSONL files). Unknown extra fields are kept, never rejected, so producers can add data
without breaking consumers. Times are RFC 3339 with a zone.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, TypeAlias

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    TypeAdapter,
    ValidationError,
)

from atmguard.core.errors import EventError, key_path

BEHAVIORS: tuple[str, ...] = ("present", "on_phone", "looking_around", "gaze_away")
"""Behaviour names the detectors emit and rules may name."""

BANK_EVENT_TYPES: tuple[str, ...] = ("transfer", "withdrawal", "deposit")
"""Bank event types; rules name them like behaviours."""

EVENT_NAMES: tuple[str, ...] = BEHAVIORS + BANK_EVENT_TYPES

Behavior = Literal["present", "on_phone", "looking_around", "gaze_away"]
BankEventType = Literal["transfer", "withdrawal", "deposit"]
Severity = Literal["low", "medium", "high", "critical"]
Mode = Literal["enforce", "shadow"]

SEVERITY_ORDER: dict[str, int] = {"low": 0, "medium": 1, "high": 2, "critical": 3}


def _decimal_to_json(value: Decimal) -> int | float:
    """Amounts are JSON numbers on the wire (banks send numbers, not strings)."""
    return int(value) if value == value.to_integral_value() else float(value)


Amount = Annotated[Decimal, PlainSerializer(_decimal_to_json, return_type=float, when_used="json")]
Timestamp = AwareDatetime


class Contract(BaseModel):
    """Base of all contracts: extras are kept, values are validated on assignment too."""

    model_config = ConfigDict(extra="allow", validate_assignment=True, populate_by_name=True)

    def to_json(self) -> str:
        """One compact JSON object, as written to topics and JSONL files."""
        return self.model_dump_json(exclude_none=True)


class BehaviorFact(Contract):
    """What a camera saw at an ATM: one behaviour, its timing and confidence."""

    type: Literal["behavior"] = "behavior"
    id: str = Field(min_length=1, description="Unique id of this fact.")
    atm_id: str = Field(min_length=1)
    camera_id: str = Field(min_length=1)
    behavior: Behavior
    ts: Timestamp = Field(description="When observed.")
    started_at: Timestamp = Field(description="When this behaviour started.")
    duration_s: float = Field(ge=0, description="How long the behaviour has lasted at `ts`.")
    count: int | None = Field(default=None, ge=0, description="E.g. glances away in the last `window_s`.")
    window_s: float | None = Field(default=None, gt=0)
    confidence: float = Field(ge=0, le=1)
    track_id: str | None = None
    snapshot: str | None = Field(default=None, description="Reference to a JPEG of the frame.")
    ended: bool = Field(default=False, description="True on the last fact of a behaviour, when it ends.")


class BankEvent(Contract):
    """A bank's signal about money moving, possibly at an ATM."""

    type: BankEventType
    id: str = Field(min_length=1, description="The bank's event id.")
    bank_id: str = Field(min_length=1)
    atm_id: str | None = Field(default=None, description="The terminal the customer stands at.")
    ts: Timestamp
    amount: Amount = Field(ge=0)
    currency: str = Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code, e.g. KZT.")
    payee_new: bool | None = None
    payee_ref: str | None = None
    account_ref: str | None = None
    status: Literal["initiated", "completed", "declined"]


Event: TypeAlias = Annotated[BehaviorFact | BankEvent, Field(discriminator="type")]
"""Any event on the input topics, told apart by `type`."""


class Actions(BaseModel):
    """What an intervention asks for; recipient groups are names defined in configs."""

    model_config = ConfigDict(extra="forbid")

    sms: list[str] = Field(default_factory=list, description="Recipient groups to text.")
    radio: list[str] = Field(default_factory=list, description="Radio channels to call.")
    webhook: list[str] = Field(default_factory=list, description="Webhook receivers to post to.")
    hold: bool = Field(default=False, description="Advise the bank to hold further operations.")


class MatchedEvent(BaseModel):
    """One event of the evidence and the pattern it matched, for explaining a firing."""

    model_config = ConfigDict(extra="allow")

    pattern: str = Field(description="The pattern's alias, or its event name.")
    event_id: str
    event: dict[str, Any] = Field(default_factory=dict)


class Intervention(Contract):
    """A rule fired: someone should act at this ATM now."""

    id: str
    rule: str
    rule_version: int
    severity: Severity
    mode: Mode
    atm_id: str
    ts: Timestamp = Field(description="Event time of the event that completed the match.")
    evidence: list[str] = Field(description="Ids of the matched events, in pattern order.")
    actions: Actions
    message: str
    key: str | None = Field(default=None, description="Value of the rule's correlation key.")
    matched: list[MatchedEvent] = Field(default_factory=list, description="The evidence, explained.")

    @property
    def short_code(self) -> str:
        """A short code officers type to acknowledge by SMS."""
        return short_code(self.id)


def intervention_id(rule: str, version: int, key: str, evidence: Iterable[str]) -> str:
    """Deterministic id: the same match always gives the same id (replays, redelivery)."""
    raw = "|".join([rule, str(version), key, *evidence])
    return "iv-" + hashlib.sha256(raw.encode()).hexdigest()[:20]


def short_code(intervention_id_: str) -> str:
    """Four upper-case characters derived from an intervention id."""
    digest = hashlib.sha256(intervention_id_.encode()).hexdigest()
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    n = int(digest[:10], 16)
    return "".join(alphabet[(n >> (5 * i)) & 31] for i in range(4))


_EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


def _first_error_field(exc: ValidationError) -> tuple[str, str]:
    err = exc.errors()[0]
    loc = list(err["loc"])
    if loc and loc[0] in ("behavior", *BANK_EVENT_TYPES):
        loc = loc[1:]  # the first element is the union's tag, not a field
    return key_path(loc), err["msg"]


def parse_event(data: dict[str, Any] | str | bytes, *, source: str | None = None, line: int | None = None) -> Event:
    """Validate one event (a dict or a JSON text) into its contract, or raise EventError naming the field."""
    try:
        if isinstance(data, str | bytes):
            return _EVENT_ADAPTER.validate_json(data)
        return _EVENT_ADAPTER.validate_python(data)
    except ValidationError as exc:
        where, msg = _first_error_field(exc)
        if exc.errors()[0]["type"] == "json_invalid":
            raise EventError(f"not valid JSON: {msg}", source=source, line=line) from None
        raise EventError(msg, source=source, line=line, field=where or None) from None


def read_jsonl(path: str | Path) -> Iterator[Event]:
    """Events of a JSONL file, in file order; blank lines and `#` comments are skipped."""
    p = Path(path)
    with p.open(encoding="utf-8") as fh:
        for lineno, raw in enumerate(fh, start=1):
            text = raw.strip()
            if not text or text.startswith("#"):
                continue
            yield parse_event(text, source=str(p), line=lineno)


def event_sort_key(event: Event) -> tuple[datetime, str]:
    """Event-time order, ties broken by id so ordering is deterministic."""
    return (event.ts, event.id)


def read_events(paths: Iterable[str | Path]) -> list[Event]:
    """All events of several JSONL files, merged in event-time order."""
    events: list[Event] = []
    for path in paths:
        events.extend(read_jsonl(path))
    events.sort(key=event_sort_key)
    return events


def dumps_jsonl(records: Iterable[BaseModel]) -> str:
    """Records as JSONL text."""
    return "".join(r.model_dump_json(exclude_none=True) + "\n" for r in records)


def json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schemas of the event contracts, by file name under docs/schemas/."""
    return {
        "behavior-fact.schema.json": BehaviorFact.model_json_schema(mode="validation"),
        "bank-event.schema.json": BankEvent.model_json_schema(mode="validation"),
        "intervention.schema.json": Intervention.model_json_schema(mode="serialization"),
        "event.schema.json": _EVENT_ADAPTER.json_schema(mode="validation"),
    }


def event_to_dict(event: BaseModel) -> dict[str, Any]:
    """An event as plain JSON-able data (timestamps as RFC 3339 strings)."""
    data: dict[str, Any] = json.loads(event.model_dump_json(exclude_none=True))
    return data
