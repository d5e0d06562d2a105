"""Settings: where the footage is found, and no machine's own paths anywhere in the tree."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from pydantic import ValidationError

from atmguard.apps.up import apply_overrides
from atmguard.core.settings import Settings
from atmguard.engine.faust_app import EngineOptions
from tests.conftest import REPO


def test_footage_comes_from_atmguard_footage(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ATMGUARD_FOOTAGE", str(tmp_path))
    assert Settings().footage == tmp_path


def test_footage_defaults_to_shared_beside_the_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ATMGUARD_FOOTAGE", raising=False)
    assert Settings().footage == REPO.parent / "shared" / "footage"


def test_no_absolute_path_of_a_machine_in_the_tracked_files() -> None:
    # the footage folder once sat at a fixed place on the team machines and was written into the code
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    machine_path = re.compile("/" + "(?:work|root|home)/[A-Za-z]")
    hits = []
    for name in files:
        path = REPO / name
        if path.suffix in {".py", ".md", ".toml", ".yaml", ".yml", ".cfg", ".ini", ""} and path.is_file():
            for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
                if machine_path.search(line):
                    hits.append(f"{name}:{n}: {line.strip()}")
    assert hits == []


def test_every_part_reads_its_section_of_the_one_tree(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATMGUARD_ENGINE_BATCH_MAX", "7")
    monkeypatch.setenv("ATMGUARD_GATEWAY_RATE_PER_S", "12.5")
    monkeypatch.setenv("ATMGUARD_FETCH_PACING", "0")
    monkeypatch.setenv("ATMGUARD_GC_FREEZE_S", "0")
    monkeypatch.setenv("ATMGUARD_NOTIFIER_API_TOKEN", "t0ken")
    settings = Settings()
    assert settings.engine.batch_max == 7
    assert settings.gateway.rate_per_s == 12.5
    assert settings.kafka.fetch_pacing == 0
    assert settings.runtime.gc_freeze_s == 0
    assert settings.notifier.api_token is not None and settings.notifier.api_token.get_secret_value() == "t0ken"
    assert "t0ken" not in repr(settings)  # secrets never show in logs


def test_engine_options_take_the_engine_section_and_explicit_values_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATMGUARD_ENGINE_SESSION_TIMEOUT_S", "2")
    monkeypatch.setenv("ATMGUARD_ENGINE_WATCH_RULES", "false")
    options = EngineOptions.from_env(batch_max=3)
    assert (options.session_timeout_s, options.watch_rules, options.batch_max) == (2.0, False, 3)


def test_a_bad_value_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATMGUARD_GATEWAY_RATE_BURST", "lots")
    with pytest.raises(ValidationError, match="rate_burst"):
        Settings()


def test_the_command_line_flags_win_over_the_environment_without_writing_it(monkeypatch: pytest.MonkeyPatch,
                                                                             tmp_path: Path) -> None:
    monkeypatch.setenv("ATMGUARD_RULES_DIR", "/elsewhere")
    settings = apply_overrides(rules_dir=tmp_path, broker=None)
    assert settings.rules_dir == tmp_path
    assert os.environ["ATMGUARD_RULES_DIR"] == "/elsewhere"  # parts are handed settings, not the environment
