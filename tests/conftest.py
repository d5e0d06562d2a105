"""Shared test fixtures and paths."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FOOTAGE = REPO.parent / "shared" / "footage"


@pytest.fixture
def repo() -> Path:
    """The repository root (rules/, configs/, examples/ live here)."""
    return REPO
