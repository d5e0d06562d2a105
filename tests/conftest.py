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


REAL_PEERS = {"broker", "workers"}
"""Fixtures that start a real broker (or engine workers on one): a test using one is an integration test."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test on a real broker `slow`, so `make unit` (-m "not slow") runs without one."""
    for item in items:
        if REAL_PEERS & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
