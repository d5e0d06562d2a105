"""The case store on SQLite and PostgreSQL: migrations, a case's life, the audit log, labels."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from atmguard.core.contracts import Intervention, Severity
from atmguard.gateway.casebook import CaseBook, CaseError
from atmguard.gateway.labels import export_labels
from atmguard.store.cases import AuditEntry
from atmguard.store.db import make_engine, make_sessionmaker, migrate
from tests import factories

TS = datetime(2026, 2, 14, 5, 2, tzinfo=UTC)


def intervention(n: int = 1, *, severity: Severity = "critical", atm: str = "atm-zhez-001") -> Intervention:
    """Case `iv-{n:04d}`: 95 s on the phone with a snapshot, then a 400 000 KZT transfer (the same evidence each time)."""
    phone = factories.fact(id="f-1", atm_id=atm, ts=TS - timedelta(seconds=30), duration_s=95,
                           snapshot="atm-zhez-001/f-1.jpg")
    money = factories.bank_event(id="trx-1", atm_id=atm, ts=TS, amount=400000)
    return factories.intervention(
        id=f"iv-{n:04d}", rule_version=2, severity=severity, atm_id=atm, ts=TS, key=atm,
        message="on the phone 95s, transfer 400000 KZT to a new payee",
        matched=[factories.matched("on_phone", phone), factories.matched("first", money)],
    )


@pytest.fixture
def book(db_url: str) -> CaseBook:
    migrate(db_url)
    migrate(db_url)  # idempotent: a second upgrade changes nothing
    from atmguard.gateway.atms import load_atms
    from tests.conftest import REPO

    return CaseBook(make_sessionmaker(make_engine(db_url)), load_atms(REPO / "configs"))


def test_a_case_from_firing_to_closing(book: CaseBook) -> None:
    glances = factories.fact("looking_around", id="f-0", ts=TS - timedelta(seconds=60), duration_s=20, count=4,
                             confidence=0.8)
    context = [factories.payload(glances)]
    assert book.record(intervention(), context) is True
    assert book.record(intervention(), context) is False  # idempotent by id
    listed = book.list_cases(state="active")
    assert [c["id"] for c in listed] == ["iv-0001"]
    assert listed[0]["address"] == "пр. Алашахана, 30" and listed[0]["district"] == "center"
    book.acknowledge("iv-0001", "dina", "console")
    book.assign("iv-0001", "Sgt. Ivanova", "dina")
    book.note("iv-0001", "patrol car 12 on the way", "dina")
    closed = book.close("iv-0001", "real_scam_stopped", "dina", "customer kept the money")
    assert closed["state"] == "closed" and closed["outcome"] == "real_scam_stopped"
    detail = book.detail("iv-0001")
    assert detail is not None
    kinds = [t["kind"] for t in detail["timeline"]]
    assert kinds[:3] == ["fact", "fact", "bank"] and {"firing", "ack", "assign", "note", "close"} <= set(kinds)
    assert [t["matched"] for t in detail["timeline"][:3]] == [False, True, True]
    assert detail["snapshots"] == ["atm-zhez-001/f-1.jpg"]
    actions = [e["action"] for e in book.audit_log("iv-0001")]
    assert actions == ["intervention.open", "intervention.ack", "intervention.assign", "intervention.note", "intervention.close"]
    with pytest.raises(CaseError):
        book.close("iv-0001", "false_alarm", "dina")
    assert book.list_cases(state="active") == []
    assert book.firing_counts()[("coached-transfer", 2)]["real_scam_stopped"] == 1


def test_bad_outcome_and_unknown_case_are_refused(book: CaseBook) -> None:
    book.record(intervention(2))
    with pytest.raises(CaseError, match="outcome"):
        book.close("iv-0002", "solved", "dina")
    with pytest.raises(CaseError) as err:
        book.acknowledge("iv-9999", "dina")
    assert err.value.status == 404


def test_filters_by_district_and_state(book: CaseBook) -> None:
    book.record(intervention(3, atm="atm-zhez-001"))
    book.record(intervention(4, atm="atm-zhez-004", severity="high"))
    book.acknowledge("iv-0004", "dina")
    assert [c["id"] for c in book.list_cases(district="north")] == ["iv-0004"]
    assert [c["id"] for c in book.list_cases(state="open")] == ["iv-0003"]
    assert [c["id"] for c in book.list_cases(state="acknowledged")] == ["iv-0004"]


def test_audit_log_is_append_only_in_the_orm_and_the_database(book: CaseBook, db_url: str) -> None:
    book.audit("dina", "test.action", None, {"n": 1})
    with book.sessions() as s:
        entry = s.query(AuditEntry).first()
        assert entry is not None
        entry.actor = "someone else"
        with pytest.raises(PermissionError):
            s.commit()
        s.rollback()
    engine = make_engine(db_url)
    for sql in ("UPDATE cases_audit SET actor = 'x'", "DELETE FROM cases_audit"):
        with pytest.raises(Exception, match="append-only"), engine.begin() as conn:
            conn.execute(text(sql))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM cases_audit WHERE actor = 'dina'")).scalar() == 1
    engine.dispose()


def test_labels_exported_from_closed_real_scams_read_by_replay(book: CaseBook, tmp_path: Path) -> None:
    from atmguard.rules.replay import load_labels

    for n in (5, 6, 7, 8):
        book.record(intervention(n))
    book.close("iv-0005", "false_alarm", "sam")
    book.close("iv-0006", "money_lost", "sam")
    book.close("iv-0007", "real_scam_stopped", "sam")
    out = tmp_path / "labels.jsonl"
    assert export_labels(book, out) == 2
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["name"].split(":")[0] for r in lines] == ["case iv-0006", "case iv-0007"]
    labels = load_labels(out)  # the rule-language part's own reader accepts the file
    assert [lb.events for lb in labels] == [["f-1", "trx-1"], ["f-1", "trx-1"]]
    assert labels[0].atm_id == "atm-zhez-001" and labels[0].from_ is not None and labels[0].to == TS
    assert labels[0].covers(intervention(5))  # a later firing with the same evidence is at this scam
