"""Durations as people write them in YAML (`90s`, `5m`, `1h`): rule windows, cooldowns, notifier timings.

Here, on the ground floor, so that reading a notifier config does not load the rule engine.
"""

from __future__ import annotations

import re
from typing import Any

DURATION_PATTERN = r"^\s*\d+(\.\d+)?\s*(ms|s|m|h|d)\s*$"
"""The written form, as a JSON Schema `pattern` (editors check it as you type)."""

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any) -> float:
    """`90s`, `5m`, `1h`, `2d`, `500ms` (or a bare number of seconds) -> seconds."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration; write it like 90s, 5m or 1h")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if isinstance(value, str):
        match = _DURATION_RE.match(value)
        if match:
            return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    raise ValueError(f"{value!r} is not a duration; write it like 90s, 5m or 1h")


__all__ = ["DURATION_PATTERN", "parse_duration"]
