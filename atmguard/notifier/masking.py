"""Phone numbers masked for logs: enough to tell two officers apart, not enough to call them."""

from __future__ import annotations

import re

_PHONE = re.compile(r"\+\d{8,15}")


def mask_phone(number: str | None) -> str:
    """`+77015554567` -> `+7701***4567`; short or empty values are masked entirely."""
    if not number:
        return "***"
    if len(number) < 9:
        return "***"
    return f"{number[:5]}***{number[-4:]}"


def mask_text(text: str) -> str:
    """Every E.164-looking number inside `text`, masked (for error messages that quote requests)."""
    return _PHONE.sub(lambda m: mask_phone(m.group(0)), text)
