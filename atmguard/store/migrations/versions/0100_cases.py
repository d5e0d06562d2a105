"""Case store, banks, keys, receipts, users and the append-only audit log (gateway part).

Revision ID: 0100_cases
Revises: 0001_base
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from atmguard.store.cases import Tz

revision = "0100_cases"
down_revision = "0001_base"
branch_labels = ("cases",)
depends_on = None


def _fk(col: str) -> sa.ForeignKey:
    return sa.ForeignKey(col, ondelete="CASCADE")


def upgrade() -> None:
    op.create_table(
        "cases_interventions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("rule", sa.String(200), nullable=False, index=True),
        sa.Column("rule_version", sa.Integer, nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("atm_id", sa.String(200), nullable=False, index=True),
        sa.Column("ts", Tz(), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("hold", sa.Boolean, nullable=False),
        sa.Column("key", sa.String(200)),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("state", sa.String(16), nullable=False, index=True),
        sa.Column("opened_at", Tz(), nullable=False),
        sa.Column("acknowledged_at", Tz()),
        sa.Column("acknowledged_by", sa.String(200)),
        sa.Column("assigned_to", sa.String(200)),
        sa.Column("closed_at", Tz()),
        sa.Column("closed_by", sa.String(200)),
        sa.Column("outcome", sa.String(32)),
        sa.Column("outcome_note", sa.Text),
    )
    op.create_table(
        "cases_evidence",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("intervention_id", sa.String(64), _fk("cases_interventions.id"), nullable=False, index=True),
        sa.Column("event_id", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("pattern", sa.String(200)),
        sa.Column("matched", sa.Boolean, nullable=False),
        sa.Column("ts", Tz(), nullable=False),
        sa.Column("snapshot", sa.String(1000)),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.UniqueConstraint("intervention_id", "event_id", name="uq_cases_evidence_event"),
    )
    for name, cols in (
        ("cases_notes", [sa.Column("author", sa.String(200), nullable=False), sa.Column("text", sa.Text, nullable=False)]),
        (
            "cases_assignments",
            [sa.Column("assignee", sa.String(200), nullable=False), sa.Column("assigned_by", sa.String(200), nullable=False)],
        ),
        ("cases_acks", [sa.Column("by", sa.String(200), nullable=False), sa.Column("via", sa.String(32), nullable=False)]),
    ):
        op.create_table(
            name,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("intervention_id", sa.String(64), _fk("cases_interventions.id"), nullable=False, index=True),
            *cols,
            sa.Column("created_at", Tz(), nullable=False),
        )
    op.create_table(
        "cases_audit",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", Tz(), nullable=False, index=True),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(200)),
        sa.Column("details", sa.JSON, nullable=False),
    )
    op.create_index("ix_cases_audit_target", "cases_audit", ["target"])
    op.create_table(
        "gw_banks",
        sa.Column("bank_id", sa.String(100), primary_key=True),
        sa.Column("webhook_url", sa.String(1000)),
        sa.Column("created_at", Tz(), nullable=False),
    )
    op.create_table(
        "gw_bank_keys",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("bank_id", sa.String(100), _fk("gw_banks.bank_id"), nullable=False, index=True),
        sa.Column("salt", sa.String(64), nullable=False),
        sa.Column("fingerprint", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", Tz(), nullable=False),
        sa.Column("revoked_at", Tz()),
    )
    op.create_table(
        "gw_receipts",
        sa.Column("bank_id", sa.String(100), primary_key=True),
        sa.Column("event_id", sa.String(200), primary_key=True),
        sa.Column("atm_id", sa.String(200), index=True),
        sa.Column("answer", sa.JSON, nullable=False),
        sa.Column("created_at", Tz(), nullable=False, index=True),
    )
    op.create_table(
        "gw_users",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("password_hash", sa.String(300), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("created_at", Tz(), nullable=False),
    )
    # The audit log is append-only in the database too, not only in the ORM.
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER cases_audit_no_{verb.lower()} BEFORE {verb} ON cases_audit "
                "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END"
            )
    elif dialect == "postgresql":
        op.execute(
            "CREATE FUNCTION cases_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$"
        )
        op.execute(
            "CREATE TRIGGER cases_audit_append_only BEFORE UPDATE OR DELETE ON cases_audit "
            "FOR EACH ROW EXECUTE FUNCTION cases_audit_append_only()"
        )


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS cases_audit_append_only ON cases_audit")
        op.execute("DROP FUNCTION IF EXISTS cases_audit_append_only()")
    for name in (
        "gw_users",
        "gw_receipts",
        "gw_bank_keys",
        "gw_banks",
        "cases_audit",
        "cases_acks",
        "cases_assignments",
        "cases_notes",
        "cases_evidence",
        "cases_interventions",
    ):
        op.drop_table(name)
