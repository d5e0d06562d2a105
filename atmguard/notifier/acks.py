"""Acknowledgements: an officer's SMS reply ("OK K7QD", "1 K7QD") or the console/API.

Codes typed on a Russian keyboard come through with Cyrillic look-alikes (ОК, К7ОД): they are
mapped to Latin before matching.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_LOOKALIKE = str.maketrans("АВЕКМНОРСТХУІавекмнорстхуі", "ABEKMHOPCTXYIABEKMHOPCTXYI")
_ACK = re.compile(r"^\s*(?:OK|OKAY|1|YES|ДA|ИӘ|ИA)(?:[\s,.:;#!-]+(?P<code>[A-Z0-9]{4}))?[\s.!]*$", re.IGNORECASE)


@dataclass(frozen=True)
class AckReply:
    """A parsed reply: it is an acknowledgement, with the code when one was given."""

    code: str | None


def parse_reply(body: str) -> AckReply | None:
    """`OK K7QD` / `1 k7qd` / `ОК К7QD` -> AckReply("K7QD"); `OK` -> AckReply(None); other text -> None."""
    text = body.translate(_LOOKALIKE)
    match = _ACK.match(text)
    if not match:
        return None
    code = match.group("code")
    return AckReply(code.upper() if code else None)
