"""`atmguard replay --rules DIR EVENTS.jsonl...`: the backtest, with labels, through the real engine."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from atmguard.core.contracts import Intervention, intervention_id
from tests.conftest import REPO
from tests.rules.langkit import run, write

EXAMPLE = REPO / "examples" / "zhezkazgan"
EVENTS = sorted(EXAMPLE.glob("*.jsonl"))
RULES = REPO / "rules"


def _jsonl(*args: str | Path) -> list[Intervention]:
    result = run("replay", "--rules", RULES, "--jsonl", *args)
    assert result.exit_code == 0, result.output
    return [Intervention.model_validate_json(line) for line in result.stdout.splitlines()]


def test_jsonl_is_one_intervention_per_line_and_nothing_else():
    ivs = _jsonl(*EVENTS)
    assert [(iv.rule, iv.atm_id, iv.mode) for iv in ivs] == [
        ("coached-transfer", "atm-zhez-001", "enforce"),
        ("gaze-away-new-payee", "atm-zhez-001", "shadow"),
        ("second-larger-transfer", "atm-zhez-001", "enforce"),
        ("long-call-no-money", "atm-zhez-003", "enforce"),
    ]
    for iv in ivs:
        assert iv.id == intervention_id(iv.rule, iv.rule_version, iv.key or iv.atm_id, iv.evidence)
        assert [m.event_id for m in iv.matched] == iv.evidence
    second = ivs[2]
    assert second.actions.hold and second.evidence[0] == "halyk-trx-20260212-884120"
    assert second.evidence[-1] == "halyk-trx-20260212-884377" and "4400000 KZT after 400000" in second.message
    assert second.ts.isoformat() == "2026-02-12T14:07:50+05:00"


def test_deterministic_whatever_the_file_order_or_line_order(tmp_path: Path):
    first = run("replay", "--rules", RULES, *EVENTS)
    lines = [line for path in EVENTS for line in path.read_text(encoding="utf-8").splitlines()]
    random.Random(3).shuffle(lines)
    half = len(lines) // 2
    a = write(tmp_path, "a.jsonl", "\n".join(lines[:half]) + "\n")
    b = write(tmp_path, "b.jsonl", "\n".join(lines[half:]) + "\n")
    again = run("replay", "--rules", RULES, b, a)
    assert first.exit_code == again.exit_code == 0
    assert first.stdout == again.stdout


def test_human_output_marks_shadow_and_explains_each_firing():
    result = run("replay", "--rules", RULES, *EVENTS)
    out = result.stdout
    assert "2026-02-12T14:04:25+05:00  CRITICAL coached-transfer v1  atm-zhez-001" in out
    assert "2026-02-12T14:04:25+05:00  SHADOW MEDIUM   gaze-away-new-payee v1  atm-zhez-001" in out
    assert "    atm-zhez-001: on the phone 120s, looked around 4 times, transfer 400000 KZT to a new payee" in out
    assert "    actions: sms:patrol radio:dispatch hold" in out
    assert "first_transfer=halyk-trx-20260212-884120" in out
    assert out.splitlines()[-1] == "58 events, 4 interventions (1 shadow), 5 rules"


def test_labels_give_precision_recall_misses_and_false_alarms(tmp_path: Path):
    labels = write(tmp_path, "labels.yaml", """\
        - name: Zhezkazgan
          atm_id: atm-zhez-001
          from: 2026-02-12T14:00:00+05:00
          to: 2026-02-12T14:15:00+05:00
        - name: courier pick-up nobody saw
          atm_id: atm-zhez-007
          from: 2026-02-12T14:00:00+05:00
          to: 2026-02-12T15:00:00+05:00
        """)
    result = run("replay", "--rules", RULES, "--labels", labels, *EVENTS)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "precision: 75.0% (3 of 4 interventions at a labelled scam)" in out
    assert "recall: 50.0% (1 of 2 labelled scams caught)" in out
    assert "  gaze-away-new-payee [shadow]: fired 1, true 1, false 0, precision 100.0%" in out
    assert "  coached-withdrawal: fired 0, true 0, false 0, precision n/a" in out
    assert f"  MISS courier pick-up nobody saw ({labels}:5)" in out
    assert "  FALSE 2026-02-12T14:23:00+05:00 atm-zhez-003 long-call-no-money" in out


def test_jsonl_labels_by_event_id_and_score_on_stderr_with_jsonl(tmp_path: Path):
    labels = write(tmp_path, "labels.jsonl", '{"name": "second transfer", "event": "halyk-trx-20260212-884377"}\n')
    result = run("replay", "--rules", RULES, "--jsonl", "--labels", labels, *EVENTS)
    assert result.exit_code == 0, result.output
    assert all(line.startswith('{"id":"iv-') for line in result.stdout.splitlines())
    assert "precision: 25.0% (1 of 4 interventions at a labelled scam)" in result.stderr
    assert "recall: 100.0% (1 of 1 labelled scams caught)" in result.stderr


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("l.yaml", "- {atm_id: A1, from: 2026-02-12T14:00:00+05:00}\n", "l.yaml:1: a range label needs atm_id, from and to"),
        ("l.yaml", "- {name: nothing}\n", "l.yaml:1: a label is either {atm_id, from, to} or {events: [ids]} / {event: id}"),
        ("l.jsonl", '{"event": "x"}\n{oops\n', "l.jsonl:2: not valid JSON"),
    ],
)
def test_bad_labels_say_where(tmp_path: Path, name: str, text: str, expected: str):
    labels = write(tmp_path, name, text)
    result = run("replay", "--rules", RULES, "--labels", labels, *EVENTS)
    assert result.exit_code == 1
    assert expected in result.stderr


def test_bad_event_lines_are_reported_and_skipped_or_fatal_with_strict(tmp_path: Path):
    events = write(tmp_path, "e.jsonl", EVENTS[0].read_text(encoding="utf-8") + '{"type": "transfer", "id": "x"}\nnot json\n')
    result = run("replay", "--rules", RULES, "--jsonl", events, EVENTS[1])
    assert result.exit_code == 0
    assert len(result.stdout.splitlines()) == 4
    assert f"skipped bad event: {events}:5: field 'bank_id': Field required" in result.stderr
    assert f"skipped bad event: {events}:6: not valid JSON" in result.stderr
    strict = run("replay", "--rules", RULES, "--strict", events, EVENTS[1])
    assert strict.exit_code == 1 and strict.stdout == ""


def test_broken_rules_stop_the_replay_with_their_errors(tmp_path: Path):
    write(tmp_path, "r.yaml", "rule: r\nversion: 1\nseverity: low\nwhen: {all: [{event: nope}]}\n")
    result = run("replay", "--rules", tmp_path, *EVENTS)
    assert result.exit_code == 1
    assert f"{tmp_path / 'r.yaml'}:4:22: unknown event 'nope'" in result.stderr


def test_priority_orders_interventions_of_the_same_event(tmp_path: Path):
    for name, priority in (("a-low", 0), ("z-high", 9)):
        write(tmp_path, f"{name}.yaml", f"rule: {name}\nversion: 1\nseverity: low\npriority: {priority}\nwhen: {{all: [{{event: deposit}}]}}\n")
    events = write(tmp_path, "e.jsonl", json.dumps({
        "type": "deposit", "id": "d1", "bank_id": "b", "atm_id": "A1", "ts": "2026-02-12T10:00:00+05:00",
        "amount": 5, "currency": "KZT", "status": "completed",
    }) + "\n")
    result = run("replay", "--rules", tmp_path, "--jsonl", events)
    assert [json.loads(line)["rule"] for line in result.stdout.splitlines()] == ["z-high", "a-low"]
