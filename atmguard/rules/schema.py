"""Pydantic models of a rule file: the rule language rule authors write in YAML.

These models check shape and values; cross-field checks that need the whole rule
(known fields per event, aliases defined before use) live in `validate_rule`, so that
every problem of a file can be reported at once with its position by the loader.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

from atmguard.core.contracts import BANK_EVENT_TYPES, BEHAVIORS, EVENT_NAMES, Actions, BankEvent, BehaviorFact
from atmguard.core.durations import parse_duration

OPERATORS: tuple[str, ...] = ("eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in", "matches")

ALIAS_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MESSAGE_NAMES: tuple[str, ...] = ("rule", "version", "severity", "mode", "key", "atm_id", "ts")
"""Names a message may use besides the patterns' names; no alias may take them."""
REFERENCE_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\.([A-Za-z_][A-Za-z0-9_]*)$")


def event_fields(event: str) -> dict[str, Any]:
    """The fields a rule may test for an event name, with their pydantic field info."""
    model = BankEvent if event in BANK_EVENT_TYPES else BehaviorFact
    return dict(model.model_fields)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


Scalar = Union[str, int, float, bool, None]  # noqa: UP007 - pydantic needs a runtime union here
Condition = Union[Scalar, dict[str, Union[Scalar, list[Scalar]]]]  # noqa: UP007


class Pattern(_Strict):
    """One event the rule waits for, with conditions on its fields."""

    event: str = Field(description="A behaviour name (on_phone, looking_around, ...) or transfer / withdrawal / deposit.")
    alias: str | None = Field(default=None, alias="as", description="Name later patterns and the message use.")
    where: dict[str, Condition] = Field(
        default_factory=dict,
        description="Field conditions: a scalar means eq; or {op: value} with op in "
        + ", ".join(OPERATORS)
        + "; a value `alias.field` refers to an earlier pattern's event.",
    )

    @property
    def name(self) -> str:
        """How the evidence and the message refer to this pattern."""
        return self.alias or self.event


def _member_kind(value: Any) -> str:
    """A member with `event:` is a pattern; anything else is a nested group (clean errors, no union noise)."""
    if isinstance(value, dict):
        return "pattern" if "event" in value else "group"
    return "pattern" if isinstance(value, Pattern) else "group"


Member = Annotated[
    Union[Annotated[Pattern, Tag("pattern")], Annotated["Group", Tag("group")]],  # noqa: UP007
    Discriminator(_member_kind),
]
"""One item under `all:` / `any:`: a pattern, or a nested group."""


class Group(_Strict):
    """Patterns combined: `all` must all match, `any` needs one; groups nest."""

    all: list[Member] | None = None
    any: list[Member] | None = None
    none: list[Pattern] | None = Field(
        default=None, description="Events that must NOT occur within the window for the rule to fire."
    )

    @model_validator(mode="after")
    def _one_combinator(self) -> Group:
        if (self.all is None) == (self.any is None):
            raise ValueError("a group needs exactly one of `all:` or `any:`")
        return self

    @property
    def members(self) -> list[Pattern | Group]:
        return list(self.all if self.all is not None else self.any or [])


class When(Group):
    """The top-level condition: a group plus the time window and correlation key."""

    within: float | None = Field(default=None, description="All matched events' ts lie within this span (e.g. 5m).")
    by: str = Field(default="atm_id", description="Correlation key field (default atm_id).")

    _parse_within = field_validator("within", mode="before")(
        classmethod(lambda cls, v: None if v is None else parse_duration(v))
    )


class Rule(_Strict):
    """One rule: when these events are seen together, intervene."""

    rule: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$", description="Rule name, lower-case with dashes.")
    version: int = Field(ge=1)
    description: str = ""
    severity: Literal["low", "medium", "high", "critical"]
    mode: Literal["enforce", "shadow"] = "enforce"
    enabled: bool = True
    priority: int = Field(default=0, description="Higher fires first when several rules fire on one event.")
    tags: list[str] = Field(default_factory=list)
    when: When
    cooldown: float = Field(default=0.0, description="At most one intervention per rule and key within this span.")
    actions: Actions = Field(default_factory=Actions)
    message: str = Field(default="{rule} at {atm_id}", description="Python format string over the matched aliases.")

    _parse_cooldown = field_validator("cooldown", mode="before")(
        classmethod(lambda cls, v: 0.0 if v is None else parse_duration(v))
    )

    def patterns(self) -> list[Pattern]:
        """Every pattern, depth first, in the order written."""
        out: list[Pattern] = []

        def walk(group: Group) -> None:
            for member in group.members:
                if isinstance(member, Pattern):
                    out.append(member)
                else:
                    walk(member)

        walk(self.when)
        return out


Group.model_rebuild()
When.model_rebuild()

__all__ = [
    "BEHAVIORS",
    "MESSAGE_NAMES",
    "Member",
    "EVENT_NAMES",
    "OPERATORS",
    "Group",
    "Pattern",
    "Rule",
    "When",
    "event_fields",
]
