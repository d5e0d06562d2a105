"""Snapshots: written where configured, referenced by path, deleted after their retention."""

from __future__ import annotations

import os
import time
from pathlib import Path

import cv2

from atmguard.detectors.config import Snapshots
from atmguard.detectors.snapshots import SnapshotStore
from tests.detectors.conftest import footage


def test_snapshot_written_and_swept_after_retention(tmp_path: Path) -> None:
    img = cv2.imread(str(footage("a_hagrid_call_gesture_1.jpg")))
    assert img is not None
    store = SnapshotStore(Snapshots(dir=tmp_path, retention_s=3600))
    old = Path(store.save(img, "atm-zhez-001", "fact-old") or "")
    new = Path(store.save(img, "atm-zhez-001", "fact-new") or "")
    assert old.exists() and old.parent.name == "atm-zhez-001" and cv2.imread(str(old)) is not None
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    assert store.sweep(force=True) == 1
    assert not old.exists() and new.exists()


def test_no_dir_means_no_snapshots() -> None:
    store = SnapshotStore(Snapshots())
    img = cv2.imread(str(footage("a_hagrid_call_gesture_1.jpg")))
    assert img is not None
    assert not store.enabled and store.save(img, "atm", "f") is None
