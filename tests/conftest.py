"""Shared test fixtures and paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from atmguard.core.settings import Settings

REPO = Path(__file__).resolve().parents[1]


FOOTAGE = Settings().footage
"""Real footage, found through the settings (ATMGUARD_FOOTAGE, default ../shared/footage beside the checkout)."""


@pytest.fixture
def repo() -> Path:
    """The repository root (rules/, configs/, examples/ live here)."""
    return REPO
