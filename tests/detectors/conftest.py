"""Shared fixtures of the detector tests: real footage, real MediaPipe models (built once per module)."""

from __future__ import annotations

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
