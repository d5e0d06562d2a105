"""SMS segment arithmetic (GSM-7 vs UCS-2) and trimming that never cuts a word.

One GSM-7 segment holds 160 characters (153 each when concatenated); any character outside
the GSM-7 alphabet (Cyrillic, Kazakh letters, emoji) switches the whole message to UCS-2:
70 characters (67 each when concatenated, counted in UTF-16 code units).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

Encoding = Literal["GSM-7", "UCS-2"]

GSM7_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENDED = set("^{}\\[~]|€\f")


def encoding(text: str) -> Encoding:
    """The encoding a handset network will use for `text`."""
    return "GSM-7" if all(c in GSM7_BASIC or c in GSM7_EXTENDED for c in text) else "UCS-2"


def units(text: str) -> int:
    """Length in the encoding's units: GSM-7 septets (extended chars count 2) or UTF-16 code units."""
    return _septets(text) if encoding(text) == "GSM-7" else _utf16_units(text)


def segments(text: str) -> int:
    """How many SMS segments `text` takes (0 for empty text)."""
    if not text:
        return 0
    n = units(text)
    single, multi = (160, 153) if encoding(text) == "GSM-7" else (70, 67)
    return 1 if n <= single else -(-n // multi)


def capacity(enc: Encoding, max_segments: int) -> int:
    """Units that fit in `max_segments` segments of encoding `enc`."""
    single, multi = (160, 153) if enc == "GSM-7" else (70, 67)
    return single if max_segments <= 1 else multi * max_segments


def _septets(text: str) -> int:
    return sum(2 if c in GSM7_EXTENDED else 1 for c in text)


def _utf16_units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def trim_words(text: str, max_units: int, enc: Encoding) -> str:
    """`text` shortened to at most `max_units` at a word boundary, with an ellipsis; never mid-word."""
    measure: Callable[[str], int] = _septets if enc == "GSM-7" else _utf16_units
    if measure(text) <= max_units:
        return text
    ellipsis = "..." if enc == "GSM-7" else "…"
    words = text.split()
    while words:
        words.pop()
        candidate = " ".join(words).rstrip(",;:.-") + ellipsis
        if words and measure(candidate) <= max_units:
            return candidate
    return ""


def fit(render: Callable[[str], str], optional: str, max_segments: int) -> str:
    """Render with as much of `optional` as keeps the message within `max_segments`.

    `render(optional_text)` builds the whole message; the essentials it adds (address, link,
    acknowledgement code) are never cut. When even the essentials alone exceed the budget the
    message goes out longer rather than without them.
    """
    full = render(optional)
    if segments(full) <= max_segments:
        return full
    enc = encoding(full)
    bare = render("")
    room = capacity(encoding(bare) if enc == "GSM-7" else enc, max_segments) - units(bare)
    if room <= 0:
        return bare
    words = optional.split()
    # Shrink word by word: a rendered check is exact even when templates add separators.
    while words:
        words.pop()
        ell = "..." if enc == "GSM-7" else "…"
        candidate = render(" ".join(words).rstrip(",;:.-") + ell) if words else bare
        if segments(candidate) <= max_segments:
            return candidate
    return bare

