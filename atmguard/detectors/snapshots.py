"""Snapshot JPEGs referenced from facts, deleted after their retention; nothing identifies a person."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from atmguard.detectors.config import Snapshots


class SnapshotStore:
    """Writes `<dir>/<atm_id>/<fact id>.jpg` and sweeps files older than `retention_s`."""

    def __init__(self, cfg: Snapshots) -> None:
        self.cfg = cfg
        self._last_sweep = 0.0

    @property
    def enabled(self) -> bool:
        return self.cfg.dir is not None

    def save(self, image: np.ndarray, atm_id: str, fact_id: str) -> str | None:
        """Write the JPEG; returns its path (the fact's `snapshot` reference)."""
        # heavy: imported on first use, never at import (package docstring)
        import cv2

        if self.cfg.dir is None:
            return None
        folder = Path(self.cfg.dir) / atm_id
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{fact_id}.jpg"
        cv2.imwrite(str(path), image, [int(cv2.IMWRITE_JPEG_QUALITY), self.cfg.quality])
        self.sweep()
        return str(path)

    def sweep(self, now: float | None = None, force: bool = False) -> int:
        """Delete snapshots past retention (at most once a minute unless forced); returns how many."""
        if self.cfg.dir is None:
            return 0
        now = time.time() if now is None else now
        if not force and now - self._last_sweep < 60:
            return 0
        self._last_sweep = now
        removed = 0
        for path in Path(self.cfg.dir).glob("*/*.jpg"):
            try:
                if now - path.stat().st_mtime > self.cfg.retention_s:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed
