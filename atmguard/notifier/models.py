"""The notifier's tables: what was sent to whom, delivery states, acks, escalation deadlines.

Kept in the shared case store (atmguard.store.db.Base) so a restart loses nothing and the
console can show every notification. Migration: store/migrations/versions/0101_notifier.py.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import DateTime, Float, ForeignKey, Integer, String, Table, Text, UniqueConstraint
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from atmguard.store.db import Base


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite forgets zones; we store naive UTC)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class NotifiedIntervention(Base):
    """One intervention the notifier took in (the dedupe key) and where it stands."""

    __tablename__ = "notifier_interventions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    atm_id: Mapped[str] = mapped_column(String(128), index=True)
    rule: Mapped[str] = mapped_column(String(200))
    severity: Mapped[str] = mapped_column(String(16))
    mode: Mapped[str] = mapped_column(String(16))
    short_code: Mapped[str] = mapped_column(String(8), index=True)
    state: Mapped[str] = mapped_column(String(16), index=True)  # shadow | open | acknowledged | undelivered
    payload: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    first_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    acked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    escalation_step: Mapped[int] = mapped_column(Integer, default=0)


class Notification(Base):
    """One message, call or webhook post to one recipient, with its delivery history."""

    __tablename__ = "notifier_notifications"
    __table_args__ = (UniqueConstraint("intervention_id", "channel", "address", "reason", name="uq_notifier_notification"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    intervention_id: Mapped[str] = mapped_column(ForeignKey("notifier_interventions.id"), index=True)
    channel: Mapped[str] = mapped_column(String(16))  # sms | radio | webhook
    target: Mapped[str] = mapped_column(String(100))  # the action name: group, radio channel, webhook
    recipient: Mapped[str] = mapped_column(String(100))  # person id, radio channel or webhook name
    address: Mapped[str] = mapped_column(String(500))  # E.164 number or URL (the real one)
    address_masked: Mapped[str] = mapped_column(String(500))
    language: Mapped[str] = mapped_column(String(8))
    reason: Mapped[str] = mapped_column(String(32))  # initial | escalation-N | fallback
    fallback_of: Mapped[int | None] = mapped_column(Integer, nullable=True)
    body: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), index=True)
    # queued -> sending -> sent -> delivered | retrying -> sending ... | dead (dead letter, see error)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True, index=True)
    twilio_sid: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    provider_status: Mapped[str | None] = mapped_column(String(32), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Acknowledgement(Base):
    """Who took an intervention, how (sms, console, api) and when."""

    __tablename__ = "notifier_acks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    intervention_id: Mapped[str] = mapped_column(ForeignKey("notifier_interventions.id"), unique=True)
    by: Mapped[str] = mapped_column(String(200))
    via: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    latency_s: Mapped[float | None] = mapped_column(Float, nullable=True)


class EscalationDeadline(Base):
    """When an unacknowledged intervention moves to escalation step `step`."""

    __tablename__ = "notifier_escalations"
    __table_args__ = (UniqueConstraint("intervention_id", "step", name="uq_notifier_escalation"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    intervention_id: Mapped[str] = mapped_column(ForeignKey("notifier_interventions.id"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    state: Mapped[str] = mapped_column(String(16), index=True)  # pending | done | cancelled


def rowcount(result: Any) -> int:
    """Rows an UPDATE changed (a claim succeeded when this is 1)."""
    return int(getattr(result, "rowcount", 0) or 0)


def _table(model: type[Base]) -> Table:
    return cast(Table, model.__table__)


# Core tables for the hot path (inserts/updates without the ORM's unit of work).
INTERVENTIONS: Table = _table(NotifiedIntervention)
NOTIFICATIONS: Table = _table(Notification)
ESCALATIONS: Table = _table(EscalationDeadline)
