"""Cheap motion gate (as Frigate gates object detection on motion): idle cameras skip the models.

A grey thumbnail is compared with a slowly updated background; the models run when enough
pixels of the zone change, while someone is (or was just) there, and at least every `recheck_s`.
"""

from __future__ import annotations

import numpy as np

from atmguard.detectors.config import Gating


class MotionGate:
    """Decides per frame whether the MediaPipe models need to run."""

    def __init__(self, cfg: Gating, zone: list[tuple[float, float]] | None = None) -> None:
        self.cfg = cfg
        self.zone = zone
        self._bg: np.ndarray | None = None
        self._mask: np.ndarray | None = None
        self._scale = 1.0
        self._last_run: float | None = None
        self._busy_until = -1.0
        self.last_motion = 0.0

    def _thumb(self, image: np.ndarray) -> np.ndarray:
        # heavy: imported on first use, never at import (package docstring)
        import cv2

        w = image.shape[1]
        # integer subsampling, not cv2.resize: a strided view costs nothing and the blur hides aliasing
        step = max(1, w // self.cfg.width)
        self._scale = 1.0 / step
        small = np.ascontiguousarray(image[::step, ::step])
        grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY) if small.ndim == 3 else small
        return cv2.GaussianBlur(grey, (5, 5), 0)

    def _zone_mask(self, shape: tuple[int, ...]) -> np.ndarray | None:
        # heavy: imported on first use, never at import (package docstring)
        import cv2

        if self.zone is None:
            return None
        if self._mask is None or self._mask.shape != shape:
            mask = np.zeros(shape, dtype=np.uint8)
            # the body stands above the zone's floor polygon: widen the mask up to the top of the frame
            pts = np.array([(x * self._scale, y * self._scale) for x, y in self.zone], dtype=np.float32)
            x0, x1 = pts[:, 0].min(), pts[:, 0].max()
            pad = 0.25 * (x1 - x0)
            y1 = pts[:, 1].max()
            cv2.rectangle(mask, (int(x0 - pad), 0), (int(x1 + pad), int(y1)), 255, -1)
            self._mask = mask
        return self._mask

    def motion(self, image: np.ndarray) -> float:
        """Share of (zone) thumbnail pixels that changed against the background."""
        # heavy: imported on first use, never at import (package docstring)
        import cv2

        grey = self._thumb(image)
        if self._bg is None or self._bg.shape != grey.shape:
            self._bg = grey.astype(np.float32)
            return 1.0
        diff = cv2.absdiff(grey, cv2.convertScaleAbs(self._bg))
        moving = diff > self.cfg.pixel_threshold
        cv2.accumulateWeighted(grey, self._bg, 0.05)
        mask = self._zone_mask(grey.shape)
        if mask is not None:
            sel = mask > 0
            return float(moving[sel].mean()) if sel.any() else 0.0
        return float(moving.mean())

    def should_run(self, image: np.ndarray, now: float, person_seen: bool) -> bool:
        """`now` is the frame time in seconds; `person_seen` is the last analysis' verdict."""
        if not self.cfg.enabled:
            return True
        self.last_motion = self.motion(image)
        if person_seen or self.last_motion >= self.cfg.min_motion_fraction:
            self._busy_until = now + self.cfg.keep_running_s
        run = now <= self._busy_until or self._last_run is None or now - self._last_run >= self.cfg.recheck_s
        if run:
            self._last_run = now
        return run
