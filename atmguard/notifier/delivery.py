"""Delivery of notifications: claim, send, record; retries with backoff on 5xx and timeouts;
after the last retry another channel (fallback); otherwise a dead letter with its reason.

Everything here is synchronous and goes through the database, so the same code runs in the
notifier's worker threads and in webhook request threads, and a restart resumes from the
rows: `queued`/`retrying` rows whose `next_attempt_at` has passed are sent again. The hot
path (create -> send -> record) uses Core statements: the ORM's unit of work cost more CPU
than the rest of a notification together.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import bindparam, case, func, insert, select, update
from sqlalchemy.orm import Session

from atmguard.core.contracts import Intervention
from atmguard.notifier.clock import Clock
from atmguard.notifier.config import DeploymentConfig
from atmguard.notifier.db import NotifierDB
from atmguard.notifier.masking import mask_phone, mask_text
from atmguard.notifier.metrics import NotifierMetrics
from atmguard.notifier.models import (
    INTERVENTIONS,
    NOTIFICATIONS,
    Notification,
    NotifiedIntervention,
    UTCDateTime,
    rowcount,
)
from atmguard.notifier.outcome import DeliveryError, Outgoing, SendResult
from atmguard.notifier.routing import Planned, plan

log = logging.getLogger(__name__)
_INSERT_NOTIFICATION = insert(NOTIFICATIONS).returning(NOTIFICATIONS.c.id)
# Built once: constructing statements cost more CPU than running them.
_MARK_SENT = (
    update(NOTIFICATIONS)
    .where(NOTIFICATIONS.c.id == bindparam("nid"))
    .values(
        state=bindparam("state"), twilio_sid=bindparam("sid"), provider_status=bindparam("status"),
        sent_at=bindparam("now"), next_attempt_at=None, error=None, updated_at=bindparam("now"),
        delivered_at=func.coalesce(bindparam("delivered", type_=UTCDateTime()), NOTIFICATIONS.c.delivered_at),
    )
)
_IV_SENT = (
    update(INTERVENTIONS)
    .where(INTERVENTIONS.c.id == bindparam("iv_id"))
    .values(
        first_sent_at=func.coalesce(INTERVENTIONS.c.first_sent_at, bindparam("now", type_=UTCDateTime())),
        state=case((INTERVENTIONS.c.state == "undelivered", "open"), else_=INTERVENTIONS.c.state),
    )
)

LIVE_STATES = ("queued", "sending", "retrying", "sent", "delivered")
SENDABLE = ("queued", "retrying")
# Provider statuses, in the order they can follow each other; a late callback never moves back.
_RANK = {
    "queued": 0, "accepted": 0, "initiated": 1, "sending": 1, "ringing": 2, "sent": 2,
    "in-progress": 3, "delivered": 4, "completed": 4, "read": 5,
}
SMS_FAILED = {"failed", "undelivered"}
CALL_RETRY = {"busy", "no-answer"}
CALL_FAILED = {"failed", "canceled"}


class ChannelSender(Protocol):
    name: str

    def send(self, out: Outgoing) -> SendResult: ...


class Delivery:
    """Creates notification rows and moves them through their states."""

    def __init__(
        self,
        db: NotifierDB,
        config: DeploymentConfig,
        *,
        public_url: str,
        channels: Mapping[str, ChannelSender],
        clock: Clock,
        metrics: NotifierMetrics,
        callback_path: str = "/twilio/status",
        on_change: Callable[[str], None] | None = None,
    ) -> None:
        self.db = db
        self.config = config
        self.public_url = public_url.rstrip("/")
        self.channels = channels
        self.clock = clock
        self.metrics = metrics
        self.callback_path = callback_path
        self.on_change = on_change or (lambda _iv: None)

    def status_callback_url(self, notification_id: int) -> str:
        """Where Twilio reports this message's or call's progress."""
        return f"{self.public_url}{self.callback_path}/{notification_id}"

    # -- creating ---------------------------------------------------------------------------

    def create(
        self,
        s: Session,
        iv_id: str,
        planned: list[Planned],
        *,
        reason: str,
        now: datetime,
        received_at: datetime,
        fallback_of: int | None = None,
        claim: bool = False,
        fresh: bool = False,
    ) -> list[Outgoing]:
        """Rows for `planned`, skipping ones this intervention already has (unless `fresh`).

        With `claim` the rows start in `sending` and come back as Outgoing for the caller to
        `deliver` right away; otherwise they are `queued` for the timer loop (and [] returns).
        """
        outs: list[Outgoing] = []
        for p in planned:
            if not fresh:
                exists = s.scalar(
                    select(Notification.id).where(
                        Notification.intervention_id == iv_id,
                        Notification.channel == p.channel,
                        Notification.address == p.address,
                        Notification.reason == reason,
                    )
                )
                if exists is not None:
                    continue
            state = "dead" if p.error else ("sending" if claim else "queued")
            nid = s.connection().execute(
                _INSERT_NOTIFICATION,
                {
                    "intervention_id": iv_id, "channel": p.channel, "target": p.target, "recipient": p.recipient,
                    "address": p.address, "address_masked": p.address_masked, "language": p.language, "reason": reason,
                    "fallback_of": fallback_of, "body": p.body, "state": state, "attempts": 1 if state == "sending" else 0,
                    "next_attempt_at": now if state == "queued" else None, "error": p.error, "created_at": now,
                    "updated_at": now, "twilio_sid": None, "provider_status": None, "sent_at": None, "delivered_at": None,
                },
            ).scalar_one()
            if p.error:
                log.error("intervention %s: %s (dead letter)", iv_id, p.error)
                self.metrics.failed.labels(p.channel).inc()
            elif claim:
                outs.append(
                    Outgoing(
                        id=nid, intervention_id=iv_id, channel=p.channel, target=p.target, recipient=p.recipient,
                        address=p.address, body=p.body, status_callback=self.status_callback_url(nid),
                        received_at=received_at,
                    )
                )
        return outs

    # -- sending ----------------------------------------------------------------------------

    def due(self, now: datetime) -> list[int]:
        """Notifications waiting to be (re)sent whose time has come."""
        with self.db.read() as s:
            return list(
                s.scalars(
                    select(Notification.id)
                    .where(Notification.state.in_(SENDABLE), Notification.next_attempt_at <= now)
                    .order_by(Notification.next_attempt_at, Notification.id)
                )
            )

    def attempt(self, nid: int) -> list[Outgoing]:
        """Claim and send notification `nid` unless someone else is; returns claimed follow-ups."""
        now = self.clock.now()
        with self.db.tx() as s:
            claimed = rowcount(
                s.execute(
                    update(Notification)
                    .where(Notification.id == nid, Notification.state.in_(SENDABLE))
                    .values(state="sending", attempts=Notification.attempts + 1, updated_at=now)
                )
            )
            if claimed != 1:
                return []
            n = s.get_one(Notification, nid)
            iv = s.get_one(NotifiedIntervention, n.intervention_id)
            if iv.state == "acknowledged" and n.channel != "webhook":  # people need no alert any more
                n.state, n.error = "cancelled", "acknowledged before sending"
                return []
            out = Outgoing(
                id=n.id, intervention_id=n.intervention_id, channel=n.channel, target=n.target, recipient=n.recipient,
                address=n.address, body=n.body, status_callback=self.status_callback_url(n.id), received_at=iv.received_at,
            )
        return self.deliver(out)

    def deliver(self, out: Outgoing) -> list[Outgoing]:
        """One send attempt of a claimed notification, recorded; returns claimed fallbacks."""
        channel = self.channels.get(out.channel)
        try:
            if channel is None:
                raise DeliveryError(f"no sender for channel {out.channel!r}", transient=False)
            result = channel.send(out)
        except DeliveryError as exc:
            log.warning("%s to %s for %s failed: %s", out.channel, _mask(out.address), out.intervention_id, exc.reason)
            return self.failed(out.id, exc.reason, transient=exc.transient, claim=True)
        except Exception as exc:  # a bug or an unexpected library error: never lose the row
            log.exception("%s to %s for %s: unexpected error", out.channel, _mask(out.address), out.intervention_id)
            return self.failed(out.id, mask_text(f"{type(exc).__name__}: {exc}"), transient=True, claim=True)
        self.sent(out, result)
        return []

    def sent(self, out: Outgoing, result: SendResult) -> None:
        """The provider accepted the request."""
        now = self.clock.now()
        with self.db.tx() as s:
            conn = s.connection()
            conn.execute(
                _MARK_SENT,
                {
                    "nid": out.id, "state": "delivered" if result.final else "sent", "sid": result.provider_id,
                    "status": result.status, "now": now, "delivered": now if result.final else None,
                },
            )
            conn.execute(_IV_SENT, {"iv_id": out.intervention_id, "now": now})
        latency = max(0.0, (now - out.received_at).total_seconds()) if out.received_at else 0.0
        self.metrics.sent.labels(out.channel).inc()
        self.metrics.send_latency.labels(out.channel).observe(latency)
        if result.final:
            self.metrics.delivered.labels(out.channel).inc()
            self.metrics.delivery_latency.labels(out.channel).observe(latency)
        log.info("%s %s sent to %s (%s)", out.channel, result.provider_id or "", _mask(out.address), out.intervention_id)
        self.on_change(out.intervention_id)

    def failed(
        self, nid: int, reason: str, *, transient: bool, provider_status: str | None = None, claim: bool = False
    ) -> list[Outgoing]:
        """Retry later (transient, attempts left) or dead-letter and fall back.

        Returns the fallbacks, claimed for the caller to send now when `claim`; otherwise
        they are queued for the timer loop.
        """
        now = self.clock.now()
        policy = self.config.delivery
        new: list[Outgoing] = []
        with self.db.tx() as s:
            n = s.get_one(Notification, nid)
            n.error = reason
            n.updated_at = now
            if provider_status:
                n.provider_status = provider_status
            if transient and n.attempts < policy.max_attempts:
                n.state = "retrying"
                n.next_attempt_at = now + timedelta(seconds=policy.backoff_s * policy.backoff_factor ** (n.attempts - 1))
                self.metrics.retried.labels(n.channel).inc()
            else:
                n.state = "dead"
                n.next_attempt_at = None
                self.metrics.failed.labels(n.channel).inc()
                log.error(
                    "%s to %s for %s is a dead letter after %d attempt(s): %s",
                    n.channel, n.address_masked, n.intervention_id, n.attempts, reason,
                )
                new = self._fallback(s, n, now, claim=claim)
                self._mark_undelivered(s, n.intervention_id)
            iv_id = n.intervention_id
        self.on_change(iv_id)
        return new

    def _fallback(self, s: Session, n: Notification, now: datetime, *, claim: bool) -> list[Outgoing]:
        targets = self.config.delivery.fallback.get(n.channel)  # type: ignore[call-overload]
        iv_row = s.get_one(NotifiedIntervention, n.intervention_id)
        if targets is None or iv_row.state == "acknowledged":
            return []
        iv = Intervention.model_validate_json(iv_row.payload)
        planned = plan(iv, self.config, targets, when=now, public_url=self.public_url)
        s.flush()
        outs = self.create(
            s, iv.id, planned, reason="fallback", now=now, received_at=iv_row.received_at, fallback_of=n.id, claim=claim
        )
        log.warning("intervention %s: %s to %s failed; falling back to %s", iv.id, n.channel, n.address_masked, targets)
        return outs

    def _mark_undelivered(self, s: Session, iv_id: str) -> None:
        s.flush()
        live = s.scalar(
            select(Notification.id).where(Notification.intervention_id == iv_id, Notification.state.in_(LIVE_STATES)).limit(1)
        )
        iv = s.get_one(NotifiedIntervention, iv_id)
        if live is None and iv.state == "open":
            iv.state = "undelivered"
            log.error("intervention %s: every notification failed; visible as undelivered", iv_id)

    # -- provider callbacks -----------------------------------------------------------------

    def on_status(
        self, nid: int, *, sid: str | None, status: str, error_code: str | None = None, duration_s: str | None = None
    ) -> bool:
        """Apply a Twilio status callback; False when it names no notification of ours.

        A failure queues a retry or a fallback for the timer loop (callers wake it).
        """
        now = self.clock.now()
        status = status.lower()
        with self.db.tx() as s:
            n = s.get(Notification, nid)
            if n is None or (sid and n.twilio_sid and sid != n.twilio_sid):
                return False
            channel = n.channel
            iv_id = n.intervention_id
            if n.state in ("dead", "cancelled"):
                return True
            failure = (channel == "sms" and status in SMS_FAILED) or (channel == "radio" and status in CALL_FAILED | CALL_RETRY)
            if not failure:
                if _RANK.get(status, -1) >= _RANK.get(n.provider_status or "", -1):
                    n.provider_status = status
                n.updated_at = now
                if status in ("delivered", "completed", "read") and n.state != "delivered":
                    n.state = "delivered"
                    n.delivered_at = now
                    iv = s.get_one(NotifiedIntervention, iv_id)
                    self.metrics.delivered.labels(channel).inc()
                    self.metrics.delivery_latency.labels(channel).observe(max(0.0, (now - iv.received_at).total_seconds()))
                    if channel == "radio" and duration_s:
                        log.info("radio call for %s completed after %s s", iv_id, duration_s)
        if not failure:
            self.on_change(iv_id)
            return True
        reason = f"Twilio reports {status}" + (f" (error {error_code})" if error_code else "")
        self.failed(nid, reason, transient=status in CALL_RETRY, provider_status=status, claim=False)
        return True


def _mask(address: str) -> str:
    return mask_phone(address) if address.startswith("+") else address
