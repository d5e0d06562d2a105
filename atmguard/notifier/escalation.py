"""Escalation: an intervention nobody acknowledged within a step's `after` reaches the next
group, the radio, the duty supervisor. Deadlines are rows, so a restart resumes them;
acknowledging cancels every pending one."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from atmguard.core.contracts import SEVERITY_ORDER, Intervention
from atmguard.notifier.clock import Clock
from atmguard.notifier.config import DeploymentConfig
from atmguard.notifier.db import NotifierDB
from atmguard.notifier.delivery import Delivery
from atmguard.notifier.metrics import NotifierMetrics
from atmguard.notifier.models import ESCALATIONS, EscalationDeadline, NotifiedIntervention, rowcount
from atmguard.notifier.outcome import Outgoing
from atmguard.notifier.routing import plan

log = logging.getLogger(__name__)
_INSERT_DEADLINES = insert(ESCALATIONS)


class Escalator:
    """Schedules, fires and cancels escalation deadlines."""

    def __init__(
        self, db: NotifierDB, config: DeploymentConfig, delivery: Delivery, clock: Clock, metrics: NotifierMetrics
    ) -> None:
        self.db = db
        self.config = config
        self.delivery = delivery
        self.clock = clock
        self.metrics = metrics

    def applies(self, iv: Intervention) -> bool:
        """Whether this intervention escalates at all (enforce mode, severe enough, steps configured)."""
        policy = self.config.escalation
        return bool(policy.steps) and iv.mode == "enforce" and SEVERITY_ORDER[iv.severity] >= SEVERITY_ORDER[policy.min_severity]

    def schedule(self, s: Session, iv_id: str, now: datetime) -> None:
        """One pending deadline per configured step, counted from `now`."""
        rows = [
            {"intervention_id": iv_id, "step": i, "due_at": now + timedelta(seconds=step.after), "state": "pending"}
            for i, step in enumerate(self.config.escalation.steps, start=1)
        ]
        s.connection().execute(_INSERT_DEADLINES, rows)

    def cancel(self, s: Session, iv_id: str) -> int:
        """Cancel the pending deadlines of an acknowledged intervention."""
        return rowcount(s.execute(
            update(EscalationDeadline)
            .where(EscalationDeadline.intervention_id == iv_id, EscalationDeadline.state == "pending")
            .values(state="cancelled")
        ))

    def due(self, now: datetime) -> list[int]:
        """Pending deadlines that have passed."""
        with self.db.read() as s:
            return list(
                s.scalars(
                    select(EscalationDeadline.id)
                    .where(EscalationDeadline.state == "pending", EscalationDeadline.due_at <= now)
                    .order_by(EscalationDeadline.due_at, EscalationDeadline.id)
                )
            )

    def fire(self, deadline_id: int) -> list[Outgoing]:
        """Take escalation step `deadline_id` unless acknowledged meanwhile; claimed ids to send now."""
        now = self.clock.now()
        with self.db.tx() as s:
            claimed = rowcount(s.execute(
                update(EscalationDeadline)
                .where(EscalationDeadline.id == deadline_id, EscalationDeadline.state == "pending")
                .values(state="done")
            ))
            if claimed != 1:
                return []
            d = s.get_one(EscalationDeadline, deadline_id)
            row = s.get_one(NotifiedIntervention, d.intervention_id)
            if row.state not in ("open", "undelivered"):
                return []
            steps = self.config.escalation.steps
            if d.step > len(steps):
                return []  # the config lost this step since it was scheduled
            iv = Intervention.model_validate_json(row.payload)
            planned = plan(iv, self.config, steps[d.step - 1], when=now, public_url=self.delivery.public_url)
            outs = self.delivery.create(
                s, iv.id, planned, reason=f"escalation-{d.step}", now=now, received_at=row.received_at, claim=True
            )
            row.escalation_step = max(row.escalation_step, d.step)
            self.metrics.escalations.inc()
            log.warning("intervention %s unacknowledged: escalation step %d (%d notification(s))", iv.id, d.step, len(outs))
        self.delivery.on_change(iv.id)
        return outs
