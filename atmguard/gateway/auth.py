"""Request signing of the bank API: HMAC-SHA256 over `TIMESTAMP + "." + RAW_BODY`.

Headers: `X-Atmguard-Bank: BANK_ID`, `X-Atmguard-Timestamp: UNIX_SECONDS`,
`X-Atmguard-Signature: sha256=HEX`. The same scheme signs our webhooks to banks.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterable

HEADER_BANK = "X-Atmguard-Bank"
HEADER_TIMESTAMP = "X-Atmguard-Timestamp"
HEADER_SIGNATURE = "X-Atmguard-Signature"


class AuthError(Exception):
    """Why a request was refused (said to the bank in the 401)."""


def signature(key: str, timestamp: str, body: bytes) -> str:
    """`sha256=HEX` for `body` sent at `timestamp` with `key`."""
    mac = hmac.new(key.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def sign_headers(bank_id: str, key: str, body: bytes, now: float | None = None) -> dict[str, str]:
    """The three headers a signed request (or webhook) carries."""
    ts = str(int(time.time() if now is None else now))
    return {HEADER_BANK: bank_id, HEADER_TIMESTAMP: ts, HEADER_SIGNATURE: signature(key, ts, body)}


def verify(
    keys: Iterable[str], timestamp: str | None, sig: str | None, body: bytes, *, skew_s: int, now: float | None = None
) -> None:
    """Raise AuthError unless `sig` is a valid signature of `body` by one of `keys`, made in time."""
    if not timestamp or not sig:
        raise AuthError(f"missing {HEADER_TIMESTAMP} or {HEADER_SIGNATURE} header")
    try:
        ts = int(timestamp)
    except ValueError:
        raise AuthError(f"{HEADER_TIMESTAMP} must be whole UNIX seconds") from None
    current = time.time() if now is None else now
    if abs(current - ts) > skew_s:
        raise AuthError(f"{HEADER_TIMESTAMP} is more than {skew_s // 60} minutes off the server clock")
    if not sig.startswith("sha256="):
        raise AuthError(f"{HEADER_SIGNATURE} must look like sha256=HEX")
    for key in keys:
        if hmac.compare_digest(signature(key, timestamp, body), sig):
            return
    raise AuthError("bad signature")
