"""Shared fixtures of the detector tests: real footage, real MediaPipe models (built once per module)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.conftest import FOOTAGE

DATA = Path(__file__).parent / "data"
T0 = datetime(2026, 2, 14, 10, 0, tzinfo=UTC)


def footage(name: str) -> Path:
    path = FOOTAGE / name
    if not path.exists():
        pytest.skip(f"footage missing: {path}")
    return path


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The multi-person pose bundle is built into a fresh folder, not the user's ~/.cache."""
    folder = tmp_path_factory.mktemp("model-cache")
    before = os.environ.get("ATMGUARD_MODEL_CACHE")
    os.environ["ATMGUARD_MODEL_CACHE"] = str(folder)
    yield folder
    if before is None:
        os.environ.pop("ATMGUARD_MODEL_CACHE", None)
    else:
        os.environ["ATMGUARD_MODEL_CACHE"] = before
