"""Signed JSON webhooks to computer-aided-dispatch systems (or any receiver).

Signed like the bank API: `X-Atmguard-Timestamp: UNIX_SECONDS` and
`X-Atmguard-Signature: sha256=HEX`, HEX = HMAC-SHA256(secret, TIMESTAMP + "." + RAW_BODY).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections.abc import Callable, Mapping

import httpx

from atmguard.notifier.config import WebhookReceiver
from atmguard.notifier.outcome import DeliveryError, Outgoing, SendResult


def sign(secret: str, timestamp: int | str, body: bytes) -> str:
    """The X-Atmguard-Signature value for `body` sent at `timestamp`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signature: str, *, max_skew_s: int = 300, now: float | None = None) -> bool:
    """Receiver-side check (for CAD integrators and tests): signature and a fresh timestamp."""
    try:
        ts = int(timestamp)
    except ValueError:
        return False
    if abs((now if now is not None else time.time()) - ts) > max_skew_s:
        return False
    return hmac.compare_digest(sign(secret, ts, body), signature)


class WebhookChannel:
    """`send` POSTs the stored JSON body to the receiver's URL with a fresh signature."""

    name = "webhook"

    def __init__(
        self,
        receivers: Mapping[str, WebhookReceiver],
        *,
        client: httpx.Client | None = None,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.receivers = receivers
        self.client = client or httpx.Client()
        self.environ = environ if environ is not None else os.environ
        self.clock = clock

    def send(self, out: Outgoing) -> SendResult:
        receiver = self.receivers.get(out.recipient)
        if receiver is None:
            raise DeliveryError(f"unknown webhook {out.recipient!r}", transient=False)
        secret = self.environ.get(receiver.secret_env)
        if not secret:
            raise DeliveryError(f"webhook {out.recipient!r}: secret env {receiver.secret_env} is not set", transient=False)
        body = out.body.encode("utf-8")
        ts = int(self.clock())
        headers = {
            "Content-Type": "application/json",
            "X-Atmguard-Timestamp": str(ts),
            "X-Atmguard-Signature": sign(secret, ts, body),
            "X-Atmguard-Delivery": str(out.id),
            "X-Atmguard-Intervention": out.intervention_id,
        }
        try:
            resp = self.client.post(receiver.url, content=body, headers=headers, timeout=receiver.timeout_s)
        except httpx.TimeoutException:
            raise DeliveryError(f"webhook {out.recipient!r} timed out", transient=True) from None
        except httpx.HTTPError as exc:
            raise DeliveryError(f"webhook {out.recipient!r}: {type(exc).__name__}", transient=True) from None
        if resp.status_code >= 500 or resp.status_code in (408, 429):
            raise DeliveryError(f"webhook {out.recipient!r} answered HTTP {resp.status_code}", transient=True)
        if resp.status_code >= 300:
            raise DeliveryError(f"webhook {out.recipient!r} answered HTTP {resp.status_code}", transient=False)
        return SendResult(None, "delivered", final=True)
