"""Durations as rule authors and operators write them: what is accepted, what is refused and how."""

from __future__ import annotations

import re

import pytest

from atmguard.core.durations import DURATION_PATTERN, parse_duration


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90.0), ("5m", 300.0), ("1h", 3600.0), ("2d", 172_800.0), ("500ms", 0.5), (" 1.5 m ", 90.0),
    (0, 0.0), (45, 45.0), (2.5, 2.5),
])
def test_written_durations_become_seconds(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(("value", "message"), [
    ("5 minutes", "'5 minutes' is not a duration; write it like 90s, 5m or 1h"),
    ("m", "'m' is not a duration; write it like 90s, 5m or 1h"),
    ("-5m", "'-5m' is not a duration; write it like 90s, 5m or 1h"),
    (True, "True is not a duration; write it like 90s, 5m or 1h"),  # YAML `yes` is not one second
    (None, "None is not a duration; write it like 90s, 5m or 1h"),
    (-1, "a duration cannot be negative"),
])
def test_refusals_say_how_to_write_one(value: object, message: str) -> None:
    with pytest.raises(ValueError) as exc:
        parse_duration(value)
    assert str(exc.value) == message


@pytest.mark.parametrize("text", ["90s", "5m", "1.5h", " 2d ", "500ms", "5 m", "5minutes", "5", "1.m", "m", "-5m", "5mm"])
def test_the_editor_schema_accepts_exactly_what_the_parser_accepts(text: str) -> None:
    try:
        parse_duration(text)
        parsed = True
    except ValueError:
        parsed = False
    assert bool(re.match(DURATION_PATTERN, text)) == parsed
