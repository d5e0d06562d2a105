"""The hold advisor's own rule engine: hold on this very event, open holds, hot reload of the rules."""

from __future__ import annotations

import os
from pathlib import Path

from atmguard.core.contracts import BankEvent, parse_event
from atmguard.gateway.advisor import advisor_from_rules
from tests.gateway.conftest import HOLD_RULE, bank_event, fact


def transfer(n: int, amount: float, at: float, atm: str = "atm-zhez-001") -> BankEvent:
    ev = parse_event(bank_event(n, amount=amount, at=at, atm=atm))
    assert isinstance(ev, BankEvent)
    return ev


def test_rule_change_is_picked_up_and_a_broken_file_keeps_the_old_rules(rules_dir: Path) -> None:
    advisor = advisor_from_rules(rules_dir)
    assert advisor.watcher is not None and advisor.watcher.check() is False  # nothing changed yet
    advisor.on_event(parse_event(fact(1, duration=120)))
    assert advisor.advise_and_feed(transfer(1, 200_000, 10)).advice == "allow"  # below the 300000 threshold

    path = rules_dir / "coached.yaml"
    path.write_text(HOLD_RULE.replace("gte: 300000", "gte: 100000").replace("version: 3", "version: 4"))
    os.utime(path, ns=(1, 10**18))  # a distinct mtime even on coarse clocks
    assert advisor.watcher.check() is True
    advisor.on_event(parse_event(fact(2, atm="atm-zhez-002", duration=120)))
    advice = advisor.advise_and_feed(transfer(2, 200_000, 10, atm="atm-zhez-002"))
    assert advice.advice == "hold" and advice.intervention_id

    path.write_text("rule: [not, valid\n")
    os.utime(path, ns=(2, 2 * 10**18))
    assert advisor.watcher.check() is False  # refused, logged
    advisor.on_event(parse_event(fact(3, atm="atm-zhez-003", duration=120)))
    assert advisor.advise_and_feed(transfer(3, 200_000, 10, atm="atm-zhez-003")).advice == "hold"  # v4 still runs


def test_without_rules_only_open_interventions_advise(tmp_path: Path) -> None:
    advisor = advisor_from_rules(tmp_path / "missing")
    assert advisor.engine is None
    assert advisor.advise_and_feed(transfer(4, 5_000_000, 0)).advice == "allow"
