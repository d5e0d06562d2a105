"""Shared test fixtures and paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _footage_dir() -> Path:
    """Real footage lives beside the checkout (../shared/footage), never in the repo.

    ATMGUARD_FOOTAGE overrides; /work/shared/footage is the team machines' location when
    the checkout sits elsewhere (a clean clone in /tmp, say).
    """
    for candidate in (os.environ.get("ATMGUARD_FOOTAGE"), REPO.parent / "shared" / "footage", "/work/shared/footage"):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return REPO.parent / "shared" / "footage"


FOOTAGE = _footage_dir()


@pytest.fixture
def repo() -> Path:
    """The repository root (rules/, configs/, examples/ live here)."""
    return REPO
