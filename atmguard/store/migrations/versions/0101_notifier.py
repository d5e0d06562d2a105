"""Notifier tables: interventions taken in, notifications, acknowledgements, escalation deadlines.

Revision ID: 0101_notifier
Revises: 0001_base
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0101_notifier"
down_revision = "0001_base"
branch_labels = ("notifier",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notifier_interventions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("atm_id", sa.String(128), nullable=False, index=True),
        sa.Column("rule", sa.String(200), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("short_code", sa.String(8), nullable=False, index=True),
        sa.Column("state", sa.String(16), nullable=False, index=True),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.Column("first_sent_at", sa.DateTime(), nullable=True),
        sa.Column("acked_at", sa.DateTime(), nullable=True),
        sa.Column("escalation_step", sa.Integer(), nullable=False, server_default="0"),
    )
    op.create_table(
        "notifier_notifications",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("intervention_id", sa.String(64), sa.ForeignKey("notifier_interventions.id"), nullable=False, index=True),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("target", sa.String(100), nullable=False),
        sa.Column("recipient", sa.String(100), nullable=False),
        sa.Column("address", sa.String(500), nullable=False),
        sa.Column("address_masked", sa.String(500), nullable=False),
        sa.Column("language", sa.String(8), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("fallback_of", sa.Integer(), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False, index=True),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=True, index=True),
        sa.Column("twilio_sid", sa.String(64), nullable=True, index=True),
        sa.Column("provider_status", sa.String(32), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("sent_at", sa.DateTime(), nullable=True),
        sa.Column("delivered_at", sa.DateTime(), nullable=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("intervention_id", "channel", "address", "reason", name="uq_notifier_notification"),
    )
    op.create_table(
        "notifier_acks",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("intervention_id", sa.String(64), sa.ForeignKey("notifier_interventions.id"), nullable=False, unique=True),
        sa.Column("by", sa.String(200), nullable=False),
        sa.Column("via", sa.String(32), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("latency_s", sa.Float(), nullable=True),
    )
    op.create_table(
        "notifier_escalations",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("intervention_id", sa.String(64), sa.ForeignKey("notifier_interventions.id"), nullable=False, index=True),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("due_at", sa.DateTime(), nullable=False, index=True),
        sa.Column("state", sa.String(16), nullable=False, index=True),
        sa.UniqueConstraint("intervention_id", "step", name="uq_notifier_escalation"),
    )


def downgrade() -> None:
    op.drop_table("notifier_escalations")
    op.drop_table("notifier_acks")
    op.drop_table("notifier_notifications")
    op.drop_table("notifier_interventions")
