"""The hold advisor's own rule engine: hold on this very event, open holds, hot reload of the rules."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from atmguard.core.contracts import BankEvent, parse_event
from atmguard.gateway.advisor import HoldAdvisor, advisor_from_rules
from tests.factories import HOLD_TRANSFER, rule_file, write_rule_pack
from tests.gateway.conftest import bank_event, fact
from tests.rules.langkit import eventually


def transfer(n: int, amount: float, at: float, atm: str = "atm-zhez-001") -> BankEvent:
    ev = parse_event(bank_event(n, amount=amount, at=at, atm=atm))
    assert isinstance(ev, BankEvent)
    return ev


@pytest.fixture
async def watched(rules_dir: Path) -> AsyncIterator[HoldAdvisor]:
    """An advisor over `rules_dir` whose watcher runs, as beside the gateway's topic follower."""
    advisor = advisor_from_rules(rules_dir)
    assert advisor.watcher is not None
    await advisor.watcher.start()
    await asyncio.wait_for(advisor.watcher.ready.wait(), 30)
    try:
        yield advisor
    finally:
        await advisor.watcher.stop()


async def test_the_hold_advice_follows_a_rule_edit_and_a_broken_file_keeps_the_old_rules(
    watched: HoldAdvisor, rules_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    advisor = watched
    advisor.on_event(parse_event(fact(1, duration=120)))
    assert advisor.advise_and_feed(transfer(1, 200_000, 10)).advice == "allow"  # below the 300000 threshold

    path = rule_file(rules_dir, HOLD_TRANSFER)
    path.write_text(HOLD_TRANSFER.replace("gte: 300000", "gte: 100000").replace("version: 3", "version: 4"))
    advisor.on_event(parse_event(fact(2, atm="atm-zhez-002", duration=120)))
    await eventually(lambda: advisor.advise(transfer(2, 200_000, 10, atm="atm-zhez-002")).advice == "hold", "v4")
    advice = advisor.advise_and_feed(transfer(2, 200_000, 10, atm="atm-zhez-002"))
    assert advice.advice == "hold" and advice.intervention_id

    caplog.set_level(logging.ERROR, logger="atmguard.gateway.advisor")
    path.write_text("rule: [not, valid\n")
    await eventually(lambda: any(f"{path}:" in r.getMessage() for r in caplog.records), "the refusal in the log")
    assert all("old rules keep running" in r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)
    advisor.on_event(parse_event(fact(3, atm="atm-zhez-003", duration=120)))
    assert advisor.advise_and_feed(transfer(3, 200_000, 10, atm="atm-zhez-003")).advice == "hold"  # v4 still runs


def test_an_unchanged_pack_is_not_swapped_again(rules_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    advisor = advisor_from_rules(rules_dir)
    assert advisor.engine is not None and advisor.watcher is not None
    swaps: list[object] = []
    monkeypatch.setattr(advisor.engine, "swap", swaps.append)
    rule_file(rules_dir, HOLD_TRANSFER).write_text("# reworded comment\n" + HOLD_TRANSFER)
    assert advisor.watcher.reload() is True and swaps == []


def test_rules_that_appear_later_start_the_rule_engine(tmp_path: Path) -> None:
    advisor = advisor_from_rules(tmp_path / "rules")
    assert advisor.engine is None and advisor.watcher is not None
    write_rule_pack(tmp_path / "rules", HOLD_TRANSFER)
    assert advisor.watcher.reload() is True and advisor.engine is not None
    advisor.on_event(parse_event(fact(5, atm="atm-zhez-005", duration=120)))
    assert advisor.advise(transfer(5, 400_000, 10, atm="atm-zhez-005")).advice == "hold"


def test_without_rules_only_open_interventions_advise(tmp_path: Path) -> None:
    advisor = advisor_from_rules(tmp_path / "missing")
    assert advisor.engine is None
    assert advisor.advise_and_feed(transfer(4, 5_000_000, 0)).advice == "allow"
