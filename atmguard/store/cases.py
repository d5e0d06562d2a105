"""Case store: interventions with their evidence, handling and outcome; banks, keys, users; audit log.

Owned by the gateway part (migration branch "cases"). The notifier keeps its delivery
tables in `atmguard/notifier/models.py`; the console reads both to draw a case's timeline.
The audit log is append-only: the ORM refuses updates and deletes, and the migration adds
database triggers that refuse them too.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    event,
)
from sqlalchemy.orm import Mapped, Mapper, mapped_column

from atmguard.store.db import Base

OUTCOMES: tuple[str, ...] = ("real_scam_stopped", "money_lost", "false_alarm")
"""How a closed case ended; feeds the rule authors' replay labels."""

ROLES: tuple[str, ...] = ("dispatcher", "supervisor", "rule_author")
STATES: tuple[str, ...] = ("open", "acknowledged", "closed")


def utcnow() -> datetime:
    """Now, timezone-aware (every stored time is UTC)."""
    return datetime.now(UTC)


class Tz(TypeDecorator[datetime]):
    """A timezone-aware DateTime that comes back aware (UTC) from SQLite too."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        if value is not None and dialect.name == "sqlite":
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class CaseIntervention(Base):
    """One intervention and how it was handled, from firing to closing."""

    __tablename__ = "cases_interventions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    rule: Mapped[str] = mapped_column(String(200), index=True)
    rule_version: Mapped[int] = mapped_column(Integer)
    severity: Mapped[str] = mapped_column(String(16))
    mode: Mapped[str] = mapped_column(String(16))
    atm_id: Mapped[str] = mapped_column(String(200), index=True)
    ts: Mapped[datetime] = mapped_column(Tz())
    message: Mapped[str] = mapped_column(Text)
    hold: Mapped[bool] = mapped_column(Boolean, default=False)
    key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16), default="open", index=True)
    opened_at: Mapped[datetime] = mapped_column(Tz(), default=utcnow)
    acknowledged_at: Mapped[datetime | None] = mapped_column(Tz(), nullable=True)
    acknowledged_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    assigned_to: Mapped[str | None] = mapped_column(String(200), nullable=True)
    closed_at: Mapped[datetime | None] = mapped_column(Tz(), nullable=True)
    closed_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    outcome: Mapped[str | None] = mapped_column(String(32), nullable=True)
    outcome_note: Mapped[str | None] = mapped_column(Text, nullable=True)


class CaseEvidence(Base):
    """A fact or bank event behind an intervention; `matched` marks the events the rule matched."""

    __tablename__ = "cases_evidence"
    __table_args__ = (UniqueConstraint("intervention_id", "event_id", name="uq_cases_evidence_event"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    intervention_id: Mapped[str] = mapped_column(ForeignKey("cases_interventions.id", ondelete="CASCADE"), index=True)
    event_id: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(32))
    pattern: Mapped[str | None] = mapped_column(String(200), nullable=True)
    matched: Mapped[bool] = mapped_column(Boolean, default=False)
    ts: Mapped[datetime] = mapped_column(Tz())
    snapshot: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)


class CaseNote(Base):
    """A dispatcher's note on a case."""

    __tablename__ = "cases_notes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    intervention_id: Mapped[str] = mapped_column(ForeignKey("cases_interventions.id", ondelete="CASCADE"), index=True)
    author: Mapped[str] = mapped_column(String(200))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(Tz(), default=utcnow)


class CaseAssignment(Base):
    """Who a case was given to, by whom (history; the current one is on the case)."""

    __tablename__ = "cases_assignments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    intervention_id: Mapped[str] = mapped_column(ForeignKey("cases_interventions.id", ondelete="CASCADE"), index=True)
    assignee: Mapped[str] = mapped_column(String(200))
    assigned_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(Tz(), default=utcnow)


class CaseAck(Base):
    """An acknowledgement: someone took the case (console, SMS reply, radio)."""

    __tablename__ = "cases_acks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    intervention_id: Mapped[str] = mapped_column(ForeignKey("cases_interventions.id", ondelete="CASCADE"), index=True)
    by: Mapped[str] = mapped_column(String(200))
    via: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(Tz(), default=utcnow)


class AuditEntry(Base):
    """Who did what, when. Never updated, never deleted."""

    __tablename__ = "cases_audit"
    __table_args__ = (Index("ix_cases_audit_target", "target"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(Tz(), default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str | None] = mapped_column(String(200), nullable=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


def _refuse(_mapper: Mapper[Any], _conn: Any, _target: Any) -> None:
    raise PermissionError("the audit log is append-only")


event.listen(AuditEntry, "before_update", _refuse)
event.listen(AuditEntry, "before_delete", _refuse)


class Bank(Base):
    """A bank allowed to post events; `webhook_url` receives intervention open/close notices."""

    __tablename__ = "gw_banks"

    bank_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    webhook_url: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    created_at: Mapped[datetime] = mapped_column(Tz(), default=utcnow)


class BankKey(Base):
    """One signing key of a bank. The key itself is not stored: it is derived from the master
    secret and `salt` (see atmguard.gateway.keys); `fingerprint` identifies it in listings."""

    __tablename__ = "gw_bank_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    bank_id: Mapped[str] = mapped_column(ForeignKey("gw_banks.bank_id", ondelete="CASCADE"), index=True)
    salt: Mapped[str] = mapped_column(String(64))
    fingerprint: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="current")  # current | old | revoked
    created_at: Mapped[datetime] = mapped_column(Tz(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(Tz(), nullable=True)


class BankReceipt(Base):
    """The answer given for one accepted bank event id: replayed verbatim on a retry."""

    __tablename__ = "gw_receipts"

    bank_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    atm_id: Mapped[str | None] = mapped_column(String(200), nullable=True, index=True)
    answer: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(Tz(), default=utcnow, index=True)


class User(Base):
    """A console user; the password is an argon2 hash."""

    __tablename__ = "gw_users"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    password_hash: Mapped[str] = mapped_column(String(300))
    role: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(Tz(), default=utcnow)
