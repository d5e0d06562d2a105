"""What the notifier tells its callers: an intervention's status and the outcome of an inbound SMS.

Kept apart from the service so the HTTP routers and the console can name these shapes
without reaching into the service's machinery.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from atmguard.notifier.models import Notification


class NotificationView(BaseModel):
    """One notification as the console shows it (numbers masked)."""

    id: int
    channel: str
    target: str
    recipient: str
    to: str
    reason: str
    state: str
    provider_status: str | None
    attempts: int
    error: str | None
    twilio_sid: str | None
    created_at: datetime
    sent_at: datetime | None
    delivered_at: datetime | None


class InterventionStatus(BaseModel):
    """Where an intervention stands in the notifier."""

    id: str
    state: str  # shadow | open | acknowledged | undelivered
    short_code: str
    escalation_step: int
    received_at: datetime
    acked_by: str | None = None
    acked_via: str | None = None
    acked_at: datetime | None = None
    pending_escalations: list[datetime] = []
    notifications: list[NotificationView] = []


class InboundResult(BaseModel):
    """What an inbound SMS did: acknowledged an intervention, or why not."""

    outcome: str  # acknowledged | already | unknown_code | need_code | not_an_ack | unknown_sender
    intervention_id: str | None = None
    person: str | None = None
    language: str = "ru"
    code: str | None = None


def notification_view(n: Notification) -> NotificationView:
    """The console's view of a notification row: the masked number only."""
    return NotificationView(
        id=n.id, channel=n.channel, target=n.target, recipient=n.recipient, to=n.address_masked, reason=n.reason,
        state=n.state, provider_status=n.provider_status, attempts=n.attempts, error=n.error, twilio_sid=n.twilio_sid,
        created_at=n.created_at, sent_at=n.sent_at, delivered_at=n.delivered_at,
    )
