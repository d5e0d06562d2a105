"""Settings: where the footage is found, and no machine's own paths anywhere in the tree."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from atmguard.core.settings import Settings
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
