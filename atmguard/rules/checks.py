"""Checks of one rule that need the whole rule, said in an analyst's words.

Pydantic (schema.py) checks the shape: keys, types, durations, enums. These checks walk the
raw YAML tree of a rule and find what shape cannot: unknown events and fields, unknown
operators, references to names not defined above, values that cannot fit a field, regexes,
message placeholders, the correlation key. Each problem comes back with the path of the YAML
node it is about, so the loader can give its line and column; all problems at once.
"""

from __future__ import annotations

import difflib
import re
import string
import types
import typing
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import AwareDatetime, NaiveDatetime

from atmguard.core.contracts import EVENT_NAMES
from atmguard.core.durations import parse_duration
from atmguard.rules.schema import (
    ALIAS_RE,
    MESSAGE_NAMES,
    OPERATORS,
    REFERENCE_RE,
    event_fields,
)

Loc = tuple[str | int, ...]

OPERATOR_HINTS: dict[str, str] = {
    "neq": "ne", "!=": "ne", "<>": "ne", "not": "ne", "not_eq": "ne", "not_equal": "ne", "is_not": "ne",
    "==": "eq", "=": "eq", "equals": "eq", "equal": "eq", "is": "eq",
    ">": "gt", "greater": "gt", "greater_than": "gt", "more": "gt", "more_than": "gt", "above": "gt",
    ">=": "gte", "ge": "gte", "min": "gte", "at_least": "gte", "greater_or_equal": "gte",
    "<": "lt", "less": "lt", "less_than": "lt", "below": "lt",
    "<=": "lte", "le": "lte", "max": "lte", "at_most": "lte", "less_or_equal": "lte",
    "one_of": "in", "any_of": "in", "nin": "not_in", "not in": "not_in", "notin": "not_in", "none_of": "not_in",
    "match": "matches", "regex": "matches", "re": "matches", "like": "matches", "mt": "matches",
}
"""Operators analysts try from other tools, and the one to write instead."""

ORDER_OPS = ("gt", "gte", "lt", "lte")


@dataclass(frozen=True)
class Issue:
    """One problem: where (a path into the YAML tree), what, and whether to point at the key."""

    loc: Loc
    message: str
    at_key: bool = False


@dataclass(frozen=True)
class FieldKind:
    """What values a contract field takes, for checking rule values against it."""

    kind: Literal["number", "integer", "bool", "text", "choice", "time"]
    optional: bool
    choices: tuple[str, ...] = ()
    pattern: str | None = None

    def describe(self) -> str:
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices)
        return {
            "number": "a number",
            "integer": "a whole number",
            "bool": "true or false",
            "text": "text",
            "time": "a time",
        }[self.kind]

    def family(self) -> str:
        """Kinds that can be compared with each other."""
        return {"integer": "number", "choice": "text"}.get(self.kind, self.kind)


def field_kind(event: str, name: str) -> FieldKind | None:
    """The kind of an event field, derived from the contract models (None: no such field)."""
    info = event_fields(event).get(name)
    if info is None:
        return None
    ann: Any = info.annotation
    optional = not info.is_required()
    args = typing.get_args(ann)
    if typing.get_origin(ann) in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        optional = optional or len(non_none) < len(args)
        ann = non_none[0] if len(non_none) == 1 else ann
    pattern = next((getattr(m, "pattern", None) for m in info.metadata if getattr(m, "pattern", None)), None)
    if typing.get_origin(ann) is Literal:
        return FieldKind("choice", optional, tuple(str(a) for a in typing.get_args(ann)))
    if ann is bool:
        return FieldKind("bool", optional)
    if ann is int:
        return FieldKind("integer", optional)
    if ann in (float, Decimal):
        return FieldKind("number", optional)
    if ann in (AwareDatetime, NaiveDatetime) or (isinstance(ann, type) and issubclass(ann, datetime)):
        return FieldKind("time", optional)
    return FieldKind("text", optional, pattern=pattern)


def did_you_mean(word: str, options: typing.Iterable[str]) -> str:
    """` (did you mean 'x'?)` when something close exists, else ``."""
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(str(value))
    if isinstance(value, dict | list):
        return "a " + ("mapping" if isinstance(value, dict) else "list")
    return str(value)


class RuleChecker:
    """Walks one rule's YAML tree and collects Issues."""

    def __init__(self, data: Any, loc: Loc = ()):
        self.data = data
        self.base = loc
        self.issues: list[Issue] = []
        self.names: dict[str, str] = {}  # every positive pattern name -> event (for "defined later")
        self.events: list[str] = []  # every event name the rule waits for (or forbids)
        self.broken: set[str] = set()  # names of patterns whose event is unknown

    # ------------------------------------------------------------------ entry

    def run(self) -> list[Issue]:
        data = self.data
        if not isinstance(data, dict):
            self.add((), "a rule is a mapping with `rule:`, `version:`, `severity:`, `when:` ...")
            return self.issues
        when = data.get("when")
        if isinstance(when, dict):
            self._collect_names(when)
            self.group(when, ("when",), {}, top=True)
            self.check_by(when)
            self.check_within(when)
        self.check_message(data.get("message"))
        self.check_tags(data.get("tags"))
        return self.issues

    def add(self, loc: Loc, message: str, *, at_key: bool = False) -> None:
        self.issues.append(Issue(self.base + loc, message, at_key))

    # ------------------------------------------------------------------ names

    def _collect_names(self, group: dict[str, Any]) -> None:
        for kind in ("all", "any"):
            members = group.get(kind)
            if isinstance(members, list):
                for m in members:
                    if isinstance(m, dict) and "event" in m:
                        name = m.get("as") or m.get("event")
                        if not isinstance(name, str):
                            continue
                        if m.get("event") in EVENT_NAMES:
                            self.names.setdefault(name, str(m.get("event")))
                        else:
                            self.broken.add(name)  # its unknown event is reported; don't pile on
                    elif isinstance(m, dict):
                        self._collect_names(m)

    # ------------------------------------------------------------------ groups and patterns

    def group(self, node: dict[str, Any], loc: Loc, visible: dict[str, str], top: bool = False) -> dict[str, str]:
        """Check a group; returns the names it defines (pattern name -> event)."""
        defined: dict[str, str] = {}
        for kind in ("all", "any"):
            if kind not in node:
                continue
            members = node[kind]
            if not isinstance(members, list) or not members:
                self.add(loc + (kind,), f"`{kind}:` needs a list of at least one pattern (`- event: ...`)")
                continue
            if kind == "all":
                seen = dict(visible)
                for i, member in enumerate(members):
                    new = self.member(member, loc + (kind, i), seen, kind)
                    seen.update(new)
                    defined.update(new)
            else:
                for i, member in enumerate(members):
                    new = self.member(member, loc + (kind, i), dict(visible), kind)
                    for name, event in new.items():
                        defined.setdefault(name, event)
        absent = node.get("none")
        if absent is not None:
            if not isinstance(absent, list) or not absent:
                self.add(loc + ("none",), "`none:` needs a list of at least one pattern (`- event: ...`)")
            else:
                scope = {**visible, **defined}
                for i, member in enumerate(absent):
                    if isinstance(member, dict) and "event" in member:
                        self.pattern(member, loc + ("none", i), scope, negative=True)
                    else:
                        self.add(loc + ("none", i), "each item under `none:` is a pattern (`- event: ...`), not a group")
        if not top:
            for key in ("within", "by"):
                if key in node:
                    self.add(loc + (key,), f"`{key}:` belongs directly under `when:`, not in a nested group", at_key=True)
        return defined

    def member(self, member: Any, loc: Loc, visible: dict[str, str], parent: str) -> dict[str, str]:
        if isinstance(member, dict) and "event" in member:
            return self.pattern(member, loc, visible, negative=False)
        if isinstance(member, dict) and any(k in member for k in ("all", "any")):
            return self.group(member, loc, visible)
        self.add(
            loc,
            f"each item under `{parent}:` is a pattern (`- event: on_phone`) or a nested group (`- any: [...]`)",
        )
        return {}

    def pattern(self, node: dict[str, Any], loc: Loc, visible: dict[str, str], *, negative: bool) -> dict[str, str]:
        event = node.get("event")
        known_event = isinstance(event, str) and event in EVENT_NAMES
        if not isinstance(event, str):
            self.add(loc + ("event",), "`event:` names a behaviour or a bank event, e.g. on_phone or transfer")
        elif not known_event:
            self.add(
                loc + ("event",),
                f"unknown event {event!r}{did_you_mean(event, EVENT_NAMES)}; events are " + ", ".join(EVENT_NAMES),
            )
        else:
            self.events.append(event)
        alias = node.get("as")
        name = alias if isinstance(alias, str) else event if isinstance(event, str) else None
        if "as" in node:
            if negative:
                self.add(loc + ("as",), "a `none:` pattern cannot have a name (`as:`): nothing can refer to an event that must not happen", at_key=True)
            elif not isinstance(alias, str) or not ALIAS_RE.match(alias):
                self.add(loc + ("as",), f"{_show(alias)} is not a usable name; use letters, digits and _ (e.g. first_transfer)")
                name = None
            elif alias in MESSAGE_NAMES:
                self.add(loc + ("as",), f"{alias!r} is reserved for the message; choose another name (e.g. {alias}_event)")
        if not negative and name is not None and name in visible:
            hint = f"second_{event}" if isinstance(event, str) else "second"
            self.add(
                loc + (("as",) if "as" in node else ("event",)),
                f"two patterns are both named {name!r}; give this one its own name with `as:` (e.g. `as: {hint}`)",
            )
        where = node.get("where")
        if where is not None:
            if not isinstance(where, dict):
                self.add(loc + ("where",), "`where:` is a mapping of field: condition, e.g. `where: {amount: {gte: 300000}}`")
            else:
                # an unknown event with a close match: check the conditions against that one
                close = difflib.get_close_matches(event, EVENT_NAMES, n=1, cutoff=0.6) if isinstance(event, str) else []
                target = event if known_event else (close[0] if close else None)
                for fname, cond in where.items() if target else ():
                    self.condition(str(target), str(fname), cond, loc + ("where", fname), visible)
        if negative or name is None or not known_event:
            return {}
        return {name: str(event)}

    # ------------------------------------------------------------------ conditions

    def condition(self, event: str, fname: str, cond: Any, loc: Loc, visible: dict[str, str]) -> None:
        kind = field_kind(event, fname)
        if kind is None:
            fields = list(event_fields(event))
            self.add(
                loc,
                f"unknown field {fname!r} for {event} events{did_you_mean(fname, fields)}; their fields are " + ", ".join(fields),
                at_key=True,
            )
            return
        if isinstance(cond, list):
            self.add(loc, f"a list needs an operator: write `{fname}: {{in: [...]}}`")
            return
        if not isinstance(cond, dict):
            self.value(event, fname, kind, "eq", cond, loc, visible)
            return
        if not cond:
            self.add(loc, f"`{fname}:` has no condition; write e.g. `{fname}: {{gte: 1}}`")
        for op, value in cond.items():
            op_s = str(op)
            if op_s not in OPERATORS:
                hint = OPERATOR_HINTS.get(op_s.lstrip("$").lower()) or OPERATOR_HINTS.get(op_s.lower())
                if hint is None and op_s.lstrip("$") in OPERATORS:
                    hint = op_s.lstrip("$")
                if hint is None:
                    close = difflib.get_close_matches(op_s.lstrip("$"), OPERATORS, n=1, cutoff=0.6)
                    hint = close[0] if close else None
                self.add(
                    loc + (op,),
                    f"unknown operator {op_s!r}" + (f"; write `{hint}`" if hint else "")
                    + "; operators are " + ", ".join(OPERATORS),
                    at_key=True,
                )
                continue
            self.value(event, fname, kind, op_s, value, loc + (op,), visible)

    def reference(self, value: Any, visible: dict[str, str], kind: FieldKind) -> tuple[str, str] | None | Literal[False]:
        """(name, field) of a reference, None for a literal, False when reported as an error."""
        if not isinstance(value, str):
            return None
        m = REFERENCE_RE.match(value)
        if m is None:
            return None
        head, attr = m.group(1), m.group(2)
        if head in visible:
            return head, attr
        if head in self.names:
            return (head, "\0later")
        if kind.family() == "text" and not did_you_mean(head, list(visible)):
            return None  # plain text that happens to contain a dot
        return (head, "\0unknown")

    def value(self, event: str, fname: str, kind: FieldKind, op: str, value: Any, loc: Loc, visible: dict[str, str]) -> None:
        what = f"{fname} is {kind.describe()}"
        ref = self.reference(value, visible, kind)
        if ref:
            head, attr = ref
            if attr == "\0later":
                self.add(loc, f"{value!r} refers to alias {head!r} before it is defined; a pattern can only refer to patterns above it")
                return
            if attr == "\0unknown":
                known = ", ".join(visible) or "none yet"
                self.add(loc, f"{value!r} refers to an unknown alias {head!r}{did_you_mean(head, visible)}; names defined above: {known}")
                return
            ref_event = visible[head]
            ref_kind = field_kind(ref_event, attr)
            if ref_kind is None:
                fields = list(event_fields(ref_event))
                self.add(loc, f"unknown field {attr!r} in {value!r}: {head!r} is a {ref_event} event{did_you_mean(attr, fields)}")
                return
            if op in ("in", "not_in", "matches"):
                self.add(loc, f"`{op}` cannot take a reference to another event; use eq, ne, gt, gte, lt or lte")
                return
            if ref_kind.family() != kind.family():
                self.add(loc, f"{what} but {value} is {ref_kind.describe()}; they cannot be compared")
                return
            if op in ORDER_OPS and kind.family() not in ("number", "time"):
                self.add(loc, f"`{op}` compares numbers or times, and {what}")
            return
        if op in ("in", "not_in"):
            values = value if isinstance(value, list) else [value]
            if not values:
                self.add(loc, f"`{op}` needs at least one value, e.g. `{op}: [a, b]`")
            for i, v in enumerate(values):
                self.literal(fname, kind, "eq", v, loc + ((i,) if isinstance(value, list) else ()))
            return
        if isinstance(value, list):
            self.add(loc, f"`{op}` takes one value, not a list" + ("; use `in:` for several" if op in ("eq", "ne") else ""))
            return
        if op == "matches":
            self.regex(fname, kind, value, loc)
            return
        self.literal(fname, kind, op, value, loc)

    def literal(self, fname: str, kind: FieldKind, op: str, value: Any, loc: Loc) -> None:
        what = f"{fname} is {kind.describe()}"
        if isinstance(value, dict):
            self.add(loc, f"{what}; a value here cannot be a mapping (did you nest an operator twice?)")
            return
        if value is None:
            if op not in ("eq", "ne"):
                self.add(loc, f"`{op}` cannot compare with null")
            elif not kind.optional:
                self.add(loc, f"{fname} is always present, so `null` (absent) never matches")
            return
        if kind.kind == "time":
            self.add(loc, f"{fname} is a time: compare it with another pattern's time (e.g. `{{gte: on_phone.{fname}}}`), not a fixed value")
            return
        if op in ORDER_OPS and kind.family() != "number":
            self.add(loc, f"`{op}` compares numbers, and {what}")
            return
        if kind.family() == "number":
            if isinstance(value, bool) or not isinstance(value, int | float):
                extra = ""
                if isinstance(value, str):
                    digits = value.replace(",", "").replace(" ", "").replace("_", "")
                    extra = f"; write {digits} without quotes or separators" if re.fullmatch(r"-?\d+(\.\d+)?", digits) else ""
                self.add(loc, f"{what}, not {_show(value)}{extra}")
            elif kind.kind == "integer" and isinstance(value, float) and not value.is_integer() and op in ("eq", "ne"):
                self.add(loc, f"{what}; {value} can never be equal to it")
            return
        if kind.kind == "bool":
            if not isinstance(value, bool):
                self.add(loc, f"{what}, not {_show(value)}")
            return
        if not isinstance(value, str):
            self.add(loc, f"{what}; write {_show(value)} in quotes if you mean the text")
            return
        if kind.kind == "choice" and value not in kind.choices:
            self.add(loc, f"{fname} is {kind.describe()}, not {value!r}{did_you_mean(value, kind.choices)}")
        elif kind.pattern and not re.fullmatch(kind.pattern, value):
            hint = f" (e.g. {value.upper()!r})" if re.fullmatch(kind.pattern, value.upper()) else ""
            self.add(loc, f"{value!r} can never match {fname}, which must fit {kind.pattern}{hint}")

    def regex(self, fname: str, kind: FieldKind, value: Any, loc: Loc) -> None:
        if kind.family() != "text":
            self.add(loc, f"`matches` works on text, and {fname} is {kind.describe()}")
            return
        if not isinstance(value, str) or not value:
            self.add(loc, "`matches` needs a regular expression in quotes, e.g. `matches: '^KZ'`")
            return
        try:
            re.compile(value)
        except re.error as exc:
            self.add(loc, f"invalid regular expression {value!r}: {exc}")
            return
        from atmguard.rules.compiler import translate_regex  # the engine's own dialect check

        try:
            translate_regex(value)
        except ValueError as exc:
            self.add(loc, f"regular expression {value!r} cannot run in the rule engine: {exc}")

    # ------------------------------------------------------------------ rule-level

    def check_by(self, when: dict[str, Any]) -> None:
        by = when.get("by", "atm_id")
        if not isinstance(by, str):
            return  # pydantic reports the type
        for event in dict.fromkeys(self.events):
            if by not in event_fields(event):
                self.add(("when", "by"), f"{event} events have no field {by!r}, so they cannot be grouped by it")
                return

    def check_within(self, when: dict[str, Any]) -> None:
        if "within" not in when or when["within"] is None:
            return
        try:
            seconds = parse_duration(when["within"])
        except ValueError:
            return  # pydantic reports it
        if seconds <= 0:
            self.add(("when", "within"), "`within:` must be longer than 0s")

    def check_tags(self, tags: Any) -> None:
        if isinstance(tags, list):
            for i, tag in enumerate(tags):
                if not isinstance(tag, str) or not tag.strip():
                    self.add(("tags", i), "a tag is a short word, e.g. `tags: [transfer, coached]`")

    def check_message(self, message: Any) -> None:
        if not isinstance(message, str):
            return
        try:
            parts = list(string.Formatter().parse(message))
        except ValueError as exc:
            self.add(("message",), f"the message is not a valid template: {exc} (write {{{{ and }}}} for literal braces)")
            return
        for _literal, field_name, spec, _conv in parts:
            if field_name is None:
                continue
            where = ("message",)
            head_m = re.match(r"[^.\[]*", field_name)
            head = head_m.group(0) if head_m else field_name
            rest = field_name[len(head):]
            if not head or head.isdigit():
                self.add(where, f"`{{{field_name}}}` in the message: name what to show, e.g. {{atm_id}} or {{first_transfer.amount}}")
            elif head in MESSAGE_NAMES:
                if rest:
                    self.add(where, f"`{{{field_name}}}` in the message: {head} has no fields; write {{{head}}}")
            elif head in self.broken or (head not in self.names and did_you_mean(head, self.broken)):
                continue
            elif head not in self.names:
                known = ", ".join([*self.names, *MESSAGE_NAMES])
                self.add(where, f"`{{{field_name}}}` in the message: unknown alias {head!r} (no pattern has that name){did_you_mean(head, [*self.names, *MESSAGE_NAMES])}; names: {known}")
            else:
                attr_m = re.fullmatch(r"\.([A-Za-z_][A-Za-z0-9_]*)", rest)
                event = self.names[head]
                if rest and attr_m is None:
                    self.add(where, f"`{{{field_name}}}` in the message: write {{{head}.field}}, e.g. {{{head}.ts}}")
                elif attr_m and event in EVENT_NAMES and field_kind(event, attr_m.group(1)) is None:
                    fields = list(event_fields(event))
                    self.add(where, f"`{{{field_name}}}` in the message: unknown field {attr_m.group(1)!r} for {event} events{did_you_mean(attr_m.group(1), fields)}")
                elif spec and attr_m and event in EVENT_NAMES:
                    self._check_spec(field_name, spec, field_kind(event, attr_m.group(1)))

    def _check_spec(self, field_name: str, spec: str, kind: FieldKind | None) -> None:
        sample: Any = {"number": 1.5, "integer": 1, "bool": True, "text": "x", "choice": "x", "time": datetime.now()}
        try:
            format(sample[kind.kind] if kind else "x", spec)
        except (ValueError, TypeError):
            self.add(("message",), f"`{{{field_name}:{spec}}}` in the message: format {spec!r} does not fit {kind.describe() if kind else 'this value'}")


def check_rule_data(data: Any, loc: Loc = ()) -> list[Issue]:
    """All problems of one rule's raw YAML tree that its shape alone does not show."""
    return RuleChecker(data, loc).run()
