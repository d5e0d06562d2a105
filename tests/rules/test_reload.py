"""Rule pack loading and hot reload (atmguard.rules.reload): what the engine and the advisor share."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from atmguard.core.errors import RuleError, RuleSetError
from atmguard.rules.reload import RulePackWatcher, load_pack
from atmguard.rules.ruleset import RuleSet
from tests.factories import LONG_CALL, write_rule_pack
from tests.rules.langkit import eventually

RULE = LONG_CALL


class Installs:
    """The caller's side of a watcher: what was installed, and the two counters."""

    def __init__(self) -> None:
        self.packs: list[RuleSet | None] = []
        self.reloads = 0
        self.failures = 0
        self.refuse: Exception | None = None

    def install(self, pack: RuleSet | None) -> None:
        if self.refuse is not None:
            raise self.refuse
        self.packs.append(pack)

    def count_reload(self) -> None:
        self.reloads += 1

    def count_failure(self) -> None:
        self.failures += 1


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    return write_rule_pack(tmp_path / "rules", RULE)


def watcher_for(folder: Path, installs: Installs) -> RulePackWatcher:
    watcher = RulePackWatcher(
        folder, installs.install, debounce_ms=50, on_reload=installs.count_reload, on_failure=installs.count_failure
    )
    watcher.first_load()
    return watcher


@pytest.fixture
async def running(rules: Path) -> AsyncIterator[tuple[RulePackWatcher, Installs]]:
    installs = Installs()
    watcher = watcher_for(rules, installs)
    await watcher.start()
    await asyncio.wait_for(watcher.ready.wait(), 30)
    try:
        yield watcher, installs
    finally:
        await watcher.stop()


def test_load_pack_is_none_without_rule_files_and_raises_with_positions(tmp_path: Path) -> None:
    assert load_pack(tmp_path / "missing") is None
    (tmp_path / "only.test.yaml").write_text("cases: []\n", encoding="utf-8")  # rule tests are not rules
    assert load_pack(tmp_path) is None
    write_rule_pack(tmp_path / "sub", RULE)
    pack = load_pack(tmp_path)
    assert pack is not None and [r.rule for r in pack.rules] == ["long-call"]  # found recursively
    (tmp_path / "sub" / "broken.yaml").write_text("rule: [not, valid\n", encoding="utf-8")
    with pytest.raises(RuleSetError) as caught:
        load_pack(tmp_path)
    assert any(e.path.endswith("broken.yaml") for e in caught.value.errors)


async def test_a_changed_valid_pack_reaches_install(running: tuple[RulePackWatcher, Installs], rules: Path) -> None:
    watcher, installs = running
    before = watcher.digest
    (rules / "long-call.yaml").write_text(RULE.replace("gte: 60", "gte: 90"), encoding="utf-8")
    await eventually(lambda: installs.packs != [], "the changed pack")
    pack = installs.packs[-1]
    assert pack is not None and pack.digest != before and watcher.digest == pack.digest
    assert pack.rules[0].model_dump(mode="json")["when"]["all"][0]["where"] == {"duration_s": {"gte": 90}}
    assert installs.reloads >= 1 and installs.failures == 0


async def test_an_invalid_change_is_refused_with_its_position_and_the_old_pack_stays(
    running: tuple[RulePackWatcher, Installs], rules: Path, caplog: pytest.LogCaptureFixture
) -> None:
    watcher, installs = running
    before = watcher.digest
    caplog.set_level(logging.ERROR)
    (rules / "broken.yaml").write_text(RULE.replace("long-call", "other").replace("high", "hgih"), encoding="utf-8")
    await eventually(lambda: installs.failures > 0, "the refused reload")
    lines = [r.getMessage() for r in caplog.records]
    assert any("old rules keep running" in m and f"{rules / 'broken.yaml'}:3:11: severity must be" in m for m in lines), lines
    assert installs.packs == [] and watcher.digest == before  # nothing installed, the old pack runs

    (rules / "broken.yaml").unlink()  # fixed by removing it: the folder is the old pack again
    (rules / "long-call.yaml").write_text(RULE.replace("high", "critical"), encoding="utf-8")
    await eventually(lambda: installs.packs != [], "the pack after the fix")
    assert installs.packs[-1] is not None and installs.packs[-1].rules[0].severity == "critical"


def test_an_unchanged_digest_is_not_installed_again(rules: Path) -> None:
    installs = Installs()
    watcher = watcher_for(rules, installs)
    (rules / "long-call.yaml").write_text("# a comment changes the file, not the rules\n" + RULE, encoding="utf-8")
    assert watcher.reload() is True
    assert installs.packs == [] and installs.reloads == 0

    (rules / "long-call.yaml").write_text(RULE.replace("version: 1", "version: 2"), encoding="utf-8")
    assert watcher.reload() is True and watcher.reload() is True
    assert len(installs.packs) == 1 and installs.reloads == 1


def test_install_may_refuse_and_the_same_pack_is_tried_again(rules: Path, caplog: pytest.LogCaptureFixture) -> None:
    installs = Installs()
    watcher = watcher_for(rules, installs)
    before = watcher.digest
    (rules / "long-call.yaml").write_text(RULE.replace("version: 1", "version: 2"), encoding="utf-8")
    installs.refuse = RuleError("does not compile", str(rules / "long-call.yaml"), 5, 7)
    assert watcher.reload() is False
    assert installs.failures == 1 and watcher.digest == before
    assert any("long-call.yaml:5:7: does not compile" in r.getMessage() for r in caplog.records)

    installs.refuse = None
    assert watcher.reload() is True and len(installs.packs) == 1 and watcher.digest != before


def test_removing_every_rule_file_installs_no_rules(rules: Path, caplog: pytest.LogCaptureFixture) -> None:
    installs = Installs()
    watcher = watcher_for(rules, installs)
    (rules / "long-call.yaml").unlink()
    assert watcher.reload() is True
    assert installs.packs == [None] and watcher.digest is None
    assert watcher.reload() is True and installs.packs == [None]  # still none: nothing to do


def test_an_invalid_pack_at_start_is_logged_and_none_runs(rules: Path, caplog: pytest.LogCaptureFixture) -> None:
    (rules / "broken.yaml").write_text("rule: [not, valid\n", encoding="utf-8")
    installs = Installs()
    watcher = RulePackWatcher(rules, installs.install, on_failure=installs.count_failure)
    assert watcher.first_load("nothing fires") is None
    assert watcher.digest is None and installs.failures == 1
    assert any(m.startswith("nothing fires: ") and "broken.yaml:" in m for m in (r.getMessage() for r in caplog.records))


async def test_stop_ends_the_watch(running: tuple[RulePackWatcher, Installs]) -> None:
    watcher, _ = running
    await watcher.stop()
    assert not watcher.ready.is_set()
    await watcher.stop()  # twice is harmless
