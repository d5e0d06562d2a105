"""JSON Schemas published under docs/schemas/: event contracts and, once present, the rule language."""

from __future__ import annotations

from typing import Any

from atmguard.core.contracts import json_schemas


def all_schemas() -> dict[str, dict[str, Any]]:
    """Every published schema by file name."""
    schemas = dict(json_schemas())
    try:
        from atmguard.rules.jsonschema import rule_file_schema
    except ImportError:
        return schemas
    schemas["rule.schema.json"] = rule_file_schema()
    return schemas
