"""Replay labels from closed cases, in the format `atmguard replay --labels` reads
(atmguard/rules/replay.py): one JSON object per line, a known real scam each.

A case closed as `real_scam_stopped` or `money_lost` becomes a label naming its evidence event
ids and its ATM with the time span of its evidence; a `false_alarm` case gives no label, so a
rule that fires there again counts against its precision.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from atmguard.gateway.casebook import CaseBook

REAL_SCAM_OUTCOMES = ("real_scam_stopped", "money_lost")


def label_records(cases: CaseBook) -> list[dict[str, Any]]:
    """One label per case closed as a real scam, oldest first."""
    out: list[dict[str, Any]] = []
    for row, evidence in cases.closed_cases():
        if row.outcome not in REAL_SCAM_OUTCOMES:
            continue
        times = [e.ts for e in evidence if e.matched] or [row.ts]
        events = list(row.payload.get("evidence", [])) or [e.event_id for e in evidence if e.matched]
        out.append(
            {
                "name": f"case {row.id}: {row.rule} v{row.rule_version}, {row.outcome.replace('_', ' ')}",
                "atm_id": row.atm_id,
                "from": min([*times, row.ts]).isoformat(),
                "to": max([*times, row.ts]).isoformat(),
                "events": events,
            }
        )
    return out


def export_labels(cases: CaseBook, out: Path) -> int:
    """Write the labels as JSONL to `out`; returns how many."""
    records = label_records(cases)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    return len(records)
