"""JSON Schema of a rule file, for editors (the YAML language server completes and checks as you type).

Written by hand from the same constants the loader uses (event names, operators, the contract
fields of each event) because a schema generated from the pydantic models would not know which
fields each event has. `atmguard schemas` writes it to docs/schemas/rule.schema.json; put

    # yaml-language-server: $schema=../docs/schemas/rule.schema.json

as the first line of a rule file to use it. The loader stays the judge: the schema cannot see
references between patterns or message placeholders.
"""

from __future__ import annotations

from typing import Any

from atmguard.core.contracts import EVENT_NAMES, SEVERITY_ORDER
from atmguard.core.durations import DURATION_PATTERN
from atmguard.rules.checks import FieldKind, field_kind
from atmguard.rules.schema import OPERATORS, event_fields

SCHEMA_ID = "https://atmguard.example/schemas/rule.schema.json"
REFERENCE_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*$"

_OP_HELP = {
    "eq": "equal to (a bare value means eq)",
    "ne": "not equal to",
    "gt": "greater than",
    "gte": "greater than or equal to",
    "lt": "less than",
    "lte": "less than or equal to",
    "in": "one of a list",
    "not_in": "none of a list",
    "matches": "matches a regular expression (search; ^ and $ anchor)",
}


def _value_schema(kind: FieldKind) -> dict[str, Any]:
    ref = {"type": "string", "pattern": REFERENCE_PATTERN, "description": "A field of an earlier pattern: alias.field"}
    base: dict[str, Any]
    if kind.family() == "number":
        base = {"type": "integer" if kind.kind == "integer" else "number"}
    elif kind.kind == "bool":
        base = {"type": "boolean"}
    elif kind.kind == "choice":
        base = {"type": "string", "enum": list(kind.choices)}
    elif kind.kind == "time":
        return ref
    else:
        base = {"type": "string"}
        if kind.pattern:
            base["pattern"] = kind.pattern
    options = [base, ref] if base.get("type") != "string" or "enum" in base or "pattern" in base else [base]
    if kind.optional:
        options.append({"type": "null", "description": "null: the field is absent"})
    return options[0] if len(options) == 1 else {"anyOf": options}


def _condition_schema(event: str, name: str) -> dict[str, Any]:
    kind = field_kind(event, name)
    assert kind is not None
    value = _value_schema(kind)
    ops: dict[str, Any] = {}
    for op in OPERATORS:
        if op in ("gt", "gte", "lt", "lte") and kind.family() not in ("number", "time"):
            continue
        if op == "matches" and kind.family() != "text":
            continue
        if op in ("in", "not_in"):
            schema: dict[str, Any] = {"type": "array", "items": value, "minItems": 1}
        elif op == "matches":
            schema = {"type": "string", "minLength": 1}
        else:
            schema = dict(value)
        ops[op] = {**schema, "description": _OP_HELP[op]}
    info = event_fields(event)[name]
    described = {
        "type": "object",
        "properties": ops,
        "additionalProperties": False,
        "minProperties": 1,
    }
    return {
        "description": (info.description or f"{name}: {kind.describe()}") + " — a value (eq) or {operator: value}",
        "anyOf": [value, described] if kind.kind != "time" else [described],
    }


def _pattern_schema(events: tuple[str, ...], *, negative: bool) -> dict[str, Any]:
    branches = []
    for event in events:
        where = {
            "type": "object",
            "description": "Conditions on this event's fields (all must hold).",
            "properties": {name: _condition_schema(event, name) for name in event_fields(event)},
            "additionalProperties": False,
        }
        branches.append(
            {"if": {"properties": {"event": {"const": event}}, "required": ["event"]}, "then": {"properties": {"where": where}}}
        )
    properties: dict[str, Any] = {
        "event": {
            "enum": list(events),
            "description": "A behaviour (present, on_phone, looking_around, gaze_away) or a bank event (transfer, withdrawal, deposit).",
        },
        "where": {"type": "object"},
    }
    if not negative:
        properties["as"] = {
            "type": "string",
            "pattern": r"^[A-Za-z_][A-Za-z0-9_]*$",
            "not": {"enum": ["rule", "version", "severity", "mode", "key", "atm_id", "ts"]},
            "description": "A name later patterns and the message use (default: the event name).",
        }
    return {
        "type": "object",
        "required": ["event"],
        "properties": properties,
        "additionalProperties": False,
        "allOf": branches,
    }


def rule_file_schema() -> dict[str, Any]:
    """The JSON Schema (draft-07) of a rule file: one rule or a list of rules."""
    duration = {
        "anyOf": [
            {"type": "string", "pattern": DURATION_PATTERN},
            {"type": "number", "minimum": 0, "description": "seconds"},
        ],
        "description": "A span like 90s, 5m, 1h, 2d or 500ms.",
    }
    members = {"type": "array", "minItems": 1, "items": {"$ref": "#/definitions/member"}}
    group_props: dict[str, Any] = {
        "all": {**members, "description": "Every item must match (in any arrival order)."},
        "any": {**members, "description": "One item is enough."},
        "none": {
            "type": "array",
            "minItems": 1,
            "items": {"$ref": "#/definitions/absent"},
            "description": "Events that must NOT occur (same key, within the window) for the rule to fire.",
        },
    }
    one_of_all_any = [{"required": ["all"], "not": {"required": ["any"]}}, {"required": ["any"], "not": {"required": ["all"]}}]
    rule = {
        "type": "object",
        "title": "atmguard rule",
        "required": ["rule", "version", "severity", "when"],
        "additionalProperties": False,
        "properties": {
            "rule": {"type": "string", "pattern": r"^[a-z0-9][a-z0-9_-]*$", "description": "Unique rule name, lower-case with dashes."},
            "version": {"type": "integer", "minimum": 1, "description": "Raise it on every change."},
            "description": {"type": "string"},
            "severity": {"enum": list(SEVERITY_ORDER), "description": "low | medium | high | critical"},
            "mode": {"enum": ["enforce", "shadow"], "description": "shadow: evaluated and recorded, nobody notified.", "default": "enforce"},
            "enabled": {"type": "boolean", "default": True, "description": "false: checked but never run."},
            "priority": {"type": "integer", "default": 0, "description": "Higher first when several rules fire on one event."},
            "tags": {"type": "array", "items": {"type": "string", "minLength": 1}},
            "when": {"$ref": "#/definitions/when"},
            "cooldown": {**duration, "description": "At most one intervention per rule and key within this span."},
            "actions": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "sms": {"type": "array", "items": {"type": "string"}, "description": "Recipient groups to text."},
                    "radio": {"type": "array", "items": {"type": "string"}, "description": "Radio channels to call."},
                    "webhook": {"type": "array", "items": {"type": "string"}, "description": "Webhook receivers to post to."},
                    "hold": {"type": "boolean", "description": "Advise the bank to hold further operations at this ATM."},
                },
            },
            "message": {
                "type": "string",
                "description": "Format string: {atm_id}, {rule}, {key}, {ts}, {alias.field} with optional format spec like {on_phone.duration_s:.0f}.",
            },
        },
    }
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "$id": SCHEMA_ID,
        "title": "atmguard rule file",
        "description": "One rule, or a list of rules.",
        "definitions": {
            "rule": rule,
            "pattern": _pattern_schema(EVENT_NAMES, negative=False),
            "absent": _pattern_schema(EVENT_NAMES, negative=True),
            "group": {
                "type": "object",
                "properties": group_props,
                "additionalProperties": False,
                "oneOf": one_of_all_any,
            },
            "member": {
                "if": {"type": "object", "required": ["event"]},
                "then": {"$ref": "#/definitions/pattern"},
                "else": {"$ref": "#/definitions/group"},
            },
            "when": {
                "type": "object",
                "description": "Which events, how close in time, correlated by what.",
                "properties": {
                    **group_props,
                    "within": {**duration, "description": "All matched events' ts lie within this span."},
                    "by": {"type": "string", "default": "atm_id", "description": "Correlation key field."},
                },
                "additionalProperties": False,
                "oneOf": one_of_all_any,
            },
        },
        "oneOf": [
            {"$ref": "#/definitions/rule"},
            {"type": "array", "minItems": 1, "items": {"$ref": "#/definitions/rule"}},
        ],
    }
