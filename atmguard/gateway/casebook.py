"""Cases: recording interventions with their evidence, and what dispatchers do with them.

Every change writes an audit entry in the same transaction and is pushed to the live feed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from atmguard.core.contracts import SEVERITY_ORDER, Intervention
from atmguard.gateway.atms import AtmInfo
from atmguard.gateway.live import LiveFeed
from atmguard.store.cases import (
    OUTCOMES,
    AuditEntry,
    CaseAck,
    CaseAssignment,
    CaseEvidence,
    CaseIntervention,
    CaseNote,
    utcnow,
)

log = logging.getLogger(__name__)


class CaseError(Exception):
    """A case action that cannot be done; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _parse_ts(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None


def _evidence_row(
    rows: list[dict[str, Any]], iv_id: str, event: dict[str, Any], pattern: str | None, matched: bool, seen: set[str]
) -> None:
    """Append the evidence row of one event, once per event id (matched events come first)."""
    eid = str(event.get("id", ""))
    if not eid or eid in seen:
        return
    seen.add(eid)
    rows.append({
        "intervention_id": iv_id, "event_id": eid, "kind": str(event.get("type", event.get("behavior", "event"))),
        "pattern": pattern, "matched": matched, "ts": _parse_ts(event.get("ts")) or utcnow(),
        "snapshot": event.get("snapshot"), "payload": event,
    })


class CaseBook:
    """The case store as the gateway, the recorder and the console use it."""

    def __init__(self, sessions: sessionmaker[Session], atms: dict[str, AtmInfo] | None = None, live: LiveFeed | None = None):
        self.sessions = sessions
        self.atms = atms or {}
        self.live = live or LiveFeed()

    # --- recording -------------------------------------------------------------------
    def record(self, iv: Intervention, context: Iterable[dict[str, Any]] = ()) -> bool:
        """Store an intervention and its evidence once (idempotent by id) and show it on the
        consoles; True if it was new. Call from the event loop (the live feed is the loop's)."""
        summary = self.store_intervention(iv, context)
        if summary is not None:
            self.live.publish("case", summary)
        return summary is not None

    def store_intervention(self, iv: Intervention, context: Iterable[dict[str, Any]] = ()) -> dict[str, Any] | None:
        """The database half of `record`, safe in a worker thread: the case's console summary
        if it was new, None if it was stored before (by this or another recorder).

        Core INSERTs (one row, then the evidence in one executemany), not the ORM's unit of
        work: an intervention can carry a couple of hundred context events, and every bit of
        Python spent here holds the GIL the gateway's event loop answers banks with."""
        now = utcnow()
        row = {
            "id": iv.id, "rule": iv.rule, "rule_version": iv.rule_version, "severity": iv.severity, "mode": iv.mode,
            "atm_id": iv.atm_id, "ts": iv.ts, "message": iv.message, "hold": iv.actions.hold, "key": iv.key,
            "payload": iv.model_dump(mode="json", exclude_none=True), "state": "open", "opened_at": now,
        }
        evidence: list[dict[str, Any]] = []
        seen: set[str] = set()
        for m in iv.matched:
            _evidence_row(evidence, iv.id, m.event, m.pattern, True, seen)
        for event in context:
            _evidence_row(evidence, iv.id, event, None, False, seen)
        audit = {"at": now, "actor": "engine", "action": "intervention.open", "target": iv.id,
                 "details": {"rule": iv.rule, "atm_id": iv.atm_id}}
        with self.sessions() as session:
            try:
                session.execute(insert(CaseIntervention), [row])
                if evidence:
                    session.execute(insert(CaseEvidence), evidence)
                session.execute(insert(AuditEntry), [audit])
                session.commit()
            except IntegrityError:  # stored before, or another recorder got there first
                session.rollback()
                return None
        return self._row_summary(CaseIntervention(**row))

    # --- reading ---------------------------------------------------------------------
    def _row_summary(self, row: CaseIntervention) -> dict[str, Any]:
        atm = self.atms.get(row.atm_id)
        return {
            "id": row.id,
            "rule": row.rule,
            "rule_version": row.rule_version,
            "severity": row.severity,
            "mode": row.mode,
            "atm_id": row.atm_id,
            "address": atm.address if atm else None,
            "place": atm.place if atm else None,
            "district": atm.district if atm else None,
            "ts": _iso(row.ts),
            "message": row.message,
            "hold": row.hold,
            "state": row.state,
            "assigned_to": row.assigned_to,
            "acknowledged_by": row.acknowledged_by,
            "outcome": row.outcome,
            "opened_at": _iso(row.opened_at),
            "closed_at": _iso(row.closed_at),
        }

    def summary(self, iv_id: str) -> dict[str, Any] | None:
        """One case as listed in the console."""
        with self.sessions() as session:
            row = session.get(CaseIntervention, iv_id)
            return self._row_summary(row) if row else None

    def list_cases(self, *, state: str | None = None, district: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        """Cases newest first; state "active" means open or acknowledged."""
        with self.sessions() as session:
            q = select(CaseIntervention).order_by(CaseIntervention.opened_at.desc()).limit(limit)
            if state == "active":
                q = q.where(CaseIntervention.state.in_(("open", "acknowledged")))
            elif state:
                q = q.where(CaseIntervention.state == state)
            if district:
                ids = [a.id for a in self.atms.values() if a.district == district]
                q = q.where(CaseIntervention.atm_id.in_(ids))
            rows = [self._row_summary(r) for r in session.scalars(q)]
        rows.sort(key=lambda r: (r["state"] == "closed", -SEVERITY_ORDER.get(r["severity"], 0)))
        return rows

    def detail(self, iv_id: str) -> dict[str, Any] | None:
        """A case with its timeline: evidence, firing, notifications, acks, assignments, notes, closing."""
        with self.sessions() as session:
            row = session.get(CaseIntervention, iv_id)
            if row is None:
                return None
            out = self._row_summary(row)
            timeline: list[dict[str, Any]] = []
            evidence = list(session.scalars(select(CaseEvidence).where(CaseEvidence.intervention_id == iv_id)))
            for ev in evidence:
                p = ev.payload
                if ev.kind == "behavior":
                    text = f"{p.get('behavior')} {float(p.get('duration_s', 0)):.0f}s (camera {p.get('camera_id')}, conf {p.get('confidence')})"
                else:
                    text = f"{ev.kind} {p.get('amount')} {p.get('currency')} {p.get('status')} (bank {p.get('bank_id')})"
                timeline.append(
                    {"ts": _iso(ev.ts), "kind": "fact" if ev.kind == "behavior" else "bank", "text": text,
                     "matched": ev.matched, "event_id": ev.event_id, "snapshot": ev.snapshot}
                )
            timeline.append({"ts": _iso(row.ts), "kind": "firing", "text": f"rule {row.rule} v{row.rule_version} fired: {row.message}"})
            timeline.extend(self._notifications(session, iv_id))
            for ack in session.scalars(select(CaseAck).where(CaseAck.intervention_id == iv_id)):
                timeline.append({"ts": _iso(ack.created_at), "kind": "ack", "text": f"acknowledged by {ack.by} via {ack.via}"})
            for a in session.scalars(select(CaseAssignment).where(CaseAssignment.intervention_id == iv_id)):
                timeline.append({"ts": _iso(a.created_at), "kind": "assign", "text": f"assigned to {a.assignee} by {a.assigned_by}"})
            for n in session.scalars(select(CaseNote).where(CaseNote.intervention_id == iv_id)):
                timeline.append({"ts": _iso(n.created_at), "kind": "note", "text": f"{n.author}: {n.text}"})
            for entry in session.scalars(
                select(AuditEntry).where(AuditEntry.target == iv_id, AuditEntry.action.in_(("bank.webhook",)))
            ):
                timeline.append({"ts": _iso(entry.at), "kind": "notification", "text": f"bank webhook to {entry.details.get('bank_id')}: {entry.details.get('event')} {entry.details.get('result')}"})
            if row.closed_at:
                timeline.append(
                    {"ts": _iso(row.closed_at), "kind": "close", "text": f"closed by {row.closed_by}: {row.outcome}" + (f" ({row.outcome_note})" if row.outcome_note else "")}
                )
            timeline.sort(key=lambda t: t["ts"] or "")
            out["timeline"] = timeline
            out["snapshots"] = [ev.snapshot for ev in evidence if ev.snapshot]
            out["outcome_note"] = row.outcome_note
            return out

    @staticmethod
    def _notifications(session: Session, iv_id: str) -> list[dict[str, Any]]:
        """The notifier's messages and calls for this case (its own tables), if that part is installed."""
        try:
            from atmguard.notifier.models import Acknowledgement, Notification
        except ImportError:  # the notifier part is optional for the console
            return []
        items: list[dict[str, Any]] = []
        try:
            for n in session.scalars(select(Notification).where(Notification.intervention_id == iv_id)):
                items.append(
                    {"ts": _iso(n.sent_at or n.created_at), "kind": "notification",
                     "text": f"{n.channel} to {n.recipient} ({n.address_masked}): {n.state}" + (f", {n.reason}" if n.reason != "initial" else "")}
                )
            for a in session.scalars(select(Acknowledgement).where(Acknowledgement.intervention_id == iv_id)):
                if a.via != "console":
                    items.append({"ts": _iso(a.at), "kind": "ack", "text": f"acknowledged by {a.by} via {a.via}"})
        except Exception as exc:  # noqa: BLE001 - tables not migrated yet (the error type depends on the database driver)
            log.debug("notifier tables unavailable: %s", exc)
            session.rollback()
        return items

    # --- dispatcher actions ----------------------------------------------------------
    def _get_active(self, session: Session, iv_id: str) -> CaseIntervention:
        row = session.get(CaseIntervention, iv_id)
        if row is None:
            raise CaseError(f"no intervention {iv_id!r}", 404)
        if row.state == "closed":
            raise CaseError(f"intervention {iv_id} is already closed", 409)
        return row

    def _done(self, iv_id: str) -> dict[str, Any]:
        summary = self.summary(iv_id) or {}
        self.live.publish("case", summary)
        return summary

    def acknowledge(self, iv_id: str, by: str, via: str = "console") -> dict[str, Any]:
        """Someone took the case; the first acknowledgement moves it to acknowledged."""
        with self.sessions.begin() as session:
            row = self._get_active(session, iv_id)
            session.add(CaseAck(intervention_id=iv_id, by=by, via=via))
            if row.state == "open":
                row.state = "acknowledged"
                row.acknowledged_at = utcnow()
                row.acknowledged_by = by
            session.add(AuditEntry(actor=by, action="intervention.ack", target=iv_id, details={"via": via}))
        return self._done(iv_id)

    def assign(self, iv_id: str, assignee: str, by: str) -> dict[str, Any]:
        """Give the case to someone (officer, desk)."""
        assignee = assignee.strip()
        if not assignee or len(assignee) > 200:
            raise CaseError("assignee: give a name of 1 to 200 characters")
        with self.sessions.begin() as session:
            row = self._get_active(session, iv_id)
            row.assigned_to = assignee
            session.add(CaseAssignment(intervention_id=iv_id, assignee=assignee, assigned_by=by))
            session.add(AuditEntry(actor=by, action="intervention.assign", target=iv_id, details={"assignee": assignee}))
        return self._done(iv_id)

    def note(self, iv_id: str, text: str, by: str) -> dict[str, Any]:
        """Add a note (allowed on closed cases too: facts learned later)."""
        text = text.strip()
        if not text or len(text) > 5000:
            raise CaseError("text: write a note of 1 to 5000 characters")
        with self.sessions.begin() as session:
            if session.get(CaseIntervention, iv_id) is None:
                raise CaseError(f"no intervention {iv_id!r}", 404)
            session.add(CaseNote(intervention_id=iv_id, author=by, text=text))
            session.add(AuditEntry(actor=by, action="intervention.note", target=iv_id, details={"length": len(text)}))
        return self._done(iv_id)

    def close(self, iv_id: str, outcome: str, by: str, note: str | None = None) -> dict[str, Any]:
        """Close the case with its outcome (real_scam_stopped, money_lost, false_alarm)."""
        if outcome not in OUTCOMES:
            raise CaseError(f"outcome: choose one of {', '.join(OUTCOMES)}")
        with self.sessions.begin() as session:
            row = self._get_active(session, iv_id)
            row.state = "closed"
            row.closed_at = utcnow()
            row.closed_by = by
            row.outcome = outcome
            row.outcome_note = (note or "").strip() or None
            session.add(AuditEntry(actor=by, action="intervention.close", target=iv_id, details={"outcome": outcome}))
        return self._done(iv_id)

    def audit(self, actor: str, action: str, target: str | None, details: dict[str, Any]) -> None:
        """Append one audit entry."""
        with self.sessions.begin() as session:
            session.add(AuditEntry(actor=actor, action=action, target=target, details=details))

    def audit_log(self, target: str | None = None, limit: int = 500) -> list[dict[str, Any]]:
        """Audit entries, oldest first."""
        with self.sessions() as session:
            q = select(AuditEntry).order_by(AuditEntry.id)
            if target:
                q = q.where(AuditEntry.target == target)
            return [
                {"at": _iso(e.at), "actor": e.actor, "action": e.action, "target": e.target, "details": e.details}
                for e in session.scalars(q.limit(limit))
            ]

    def firing_counts(self) -> dict[tuple[str, int], dict[str, int]]:
        """(rule, version) -> counts of firings and outcomes, for rule authors."""
        out: dict[tuple[str, int], dict[str, int]] = {}
        with self.sessions() as session:
            q = select(CaseIntervention.rule, CaseIntervention.rule_version, CaseIntervention.outcome, func.count()).group_by(
                CaseIntervention.rule, CaseIntervention.rule_version, CaseIntervention.outcome
            )
            for rule, version, outcome, n in session.execute(q):
                counts = out.setdefault((rule, version), {"firings": 0, **dict.fromkeys(OUTCOMES, 0)})
                counts["firings"] += n
                if outcome:
                    counts[outcome] += n
        return out

    def closed_cases(self) -> list[tuple[CaseIntervention, list[CaseEvidence]]]:
        """Closed cases with their evidence, oldest first (for label export)."""
        with self.sessions() as session:
            rows = list(
                session.scalars(select(CaseIntervention).where(CaseIntervention.state == "closed").order_by(CaseIntervention.ts))
            )
            return [
                (r, list(session.scalars(select(CaseEvidence).where(CaseEvidence.intervention_id == r.id).order_by(CaseEvidence.ts))))
                for r in rows
            ]
