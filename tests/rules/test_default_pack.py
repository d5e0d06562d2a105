"""The default rule pack in rules/ and the bundled Zhezkazgan scenario."""

from __future__ import annotations

import re
from datetime import timedelta

from atmguard.core.contracts import BehaviorFact, read_events
from atmguard.rules import load_rules
from tests.conftest import REPO
from tests.rules.langkit import ISSUE_RULE, run

RULES = REPO / "rules"
EXAMPLE = REPO / "examples" / "zhezkazgan"


def test_rules_test_rules_passes():
    result = run("rules", "test", RULES)
    last = result.stdout.splitlines()[-1]
    assert result.exit_code == 0, result.stdout
    m = re.fullmatch(r"(\d+) passed, 0 failed", last)
    assert m and int(m.group(1)) >= 20, last


def test_pack_covers_the_required_cases():
    ruleset = load_rules([RULES])
    rules = {r.rule: r for r in ruleset.rules}
    assert (RULES / "coached-transfer.yaml").read_text(encoding="utf-8").split("\n", 1)[1] == ISSUE_RULE
    assert {"coached-transfer", "coached-withdrawal", "second-larger-transfer", "long-call-no-money"} <= set(rules)
    assert any(p.event == "withdrawal" for p in rules["coached-withdrawal"].patterns())
    second = rules["second-larger-transfer"].patterns()[-1]
    assert second.where["amount"] == {"gt": "first_transfer.amount"}
    quiet = rules["long-call-no-money"]
    assert quiet.severity == "low" and not quiet.actions.sms and not quiet.actions.radio and not quiet.actions.hold
    assert quiet.when.none


def test_zhezkazgan_scenario_is_contract_events_as_detectors_and_banks_emit_them():
    events = read_events(sorted(EXAMPLE.glob("*.jsonl")))
    assert all(e.ts.utcoffset() == timedelta(hours=5) for e in events)
    calls = [e for e in events if isinstance(e, BehaviorFact) and e.behavior == "on_phone" and e.atm_id == "atm-zhez-001"]
    durations = [c.duration_s for c in calls]
    assert durations == sorted(durations) and durations[-1] >= 400 and len({c.started_at for c in calls}) == 1
    assert {e.behavior for e in events if isinstance(e, BehaviorFact)} >= {"present", "on_phone", "looking_around"}
    amounts = [int(e.amount) for e in events if e.type == "transfer" and e.atm_id == "atm-zhez-001"]
    assert amounts == [400_000, 4_400_000]
    assert (EXAMPLE / "README.md").exists()


def test_replaying_the_scenario_shows_the_interventions():
    result = run("replay", "--rules", RULES, *sorted(EXAMPLE.glob("*.jsonl")))
    assert result.exit_code == 0
    assert "CRITICAL coached-transfer v1  atm-zhez-001" in result.stdout
    assert "CRITICAL second-larger-transfer v1  atm-zhez-001" in result.stdout
    assert "second transfer 4400000 KZT after 400000, still on the phone" in result.stdout
