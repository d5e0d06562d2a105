"""What a channel's send attempt returns or raises (shared by sms, radio and webhook)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import requests
from twilio.base.exceptions import TwilioRestException

from atmguard.notifier.masking import mask_text


@dataclass(frozen=True)
class Outgoing:
    """One notification as a channel sees it."""

    id: int
    intervention_id: str
    channel: str
    target: str
    recipient: str
    address: str
    body: str
    status_callback: str
    received_at: datetime | None = None  # when the intervention came in (latency metrics)


@dataclass(frozen=True)
class SendResult:
    """Accepted by the provider: its id (Twilio sid) and status; `final` when nothing more will come."""

    provider_id: str | None
    status: str
    final: bool = False


class DeliveryError(Exception):
    """A send attempt failed; `transient` ones (5xx, 429, timeouts, connection errors) are retried."""

    def __init__(self, reason: str, *, transient: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transient = transient


def from_twilio(exc: Exception) -> DeliveryError:
    """Map what the twilio SDK raised to a DeliveryError (numbers masked in the reason)."""
    if isinstance(exc, TwilioRestException):
        transient = exc.status >= 500 or exc.status == 429
        code = f" code {exc.code}" if exc.code else ""
        return DeliveryError(mask_text(f"Twilio HTTP {exc.status}{code}: {exc.msg}"), transient=transient)
    if isinstance(exc, requests.Timeout):
        return DeliveryError(f"Twilio request timed out: {type(exc).__name__}", transient=True)
    if isinstance(exc, requests.ConnectionError):
        return DeliveryError(f"cannot reach Twilio: {type(exc).__name__}", transient=True)
    return DeliveryError(mask_text(f"{type(exc).__name__}: {exc}"), transient=False)
