"""Motion gating on real frames: an idle camera skips the models, someone arriving wakes them."""

from __future__ import annotations

from datetime import timedelta

import cv2
import numpy as np
import pytest

from atmguard.detectors.config import CameraConfig, Gating
from atmguard.detectors.gating import MotionGate
from atmguard.detectors.pipeline import CameraPipeline
from atmguard.detectors.sources import Frame
from tests.detectors.conftest import T0, footage


def frames_of(name: str, n: int, step: int = 1) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(footage(name)))
    out: list = []
    i = 0
    while len(out) < n:
        ok, img = cap.read()
        if not ok:
            break
        if i % step == 0:
            out.append(img)
        i += 1
    cap.release()
    return out


@pytest.mark.slow  # the pipeline runs the MediaPipe models on the frames the gate lets through
def test_empty_scene_is_gated_and_a_walker_wakes_the_models() -> None:
    # the standing-table clip opens on an empty room for about 7 s (10 fps); someone walks in after
    frames = frames_of("d_intel_standing_table_rear_overhead.mp4", 60, step=2)  # 0..12 s at 5 fps
    cfg = CameraConfig(camera_id="kiosk", atm_id="atm", gating=Gating(recheck_s=10.0, keep_running_s=1.0),
                       zone=[(300, 280), (620, 280), (680, 430), (260, 430)])
    pipe = CameraPipeline(cfg)
    try:
        analysed, facts = [], []
        for i, img in enumerate(frames):
            res = pipe.process(Frame(img, T0 + timedelta(seconds=i / 5), i, 0.0))
            analysed.append(res.analysed)
            facts += res.facts
        idle = analysed[6:30]  # 1.2 .. 6 s: nobody, nothing moves
        assert sum(idle) <= 2  # the models ran at most at a periodic recheck
        assert sum(analysed[45:]) >= 10  # 9 .. 12 s: someone at the table, the models run every frame
        present = [f for f in facts if f.behavior == "present"]
        assert present and all((f.started_at - T0).total_seconds() > 6.0 for f in present)  # no ghost at the empty table
    finally:
        pipe.close()


def test_gate_counts_motion_only_in_the_zone_area() -> None:
    img = frames_of("d_intel_standing_table_rear_overhead.mp4", 1)[0]
    gate = MotionGate(Gating(), zone=[(300, 280), (620, 280), (680, 430), (260, 430)])
    assert gate.motion(img) == 1.0  # the first frame is all new
    assert gate.motion(img) == 0.0
    moved = img.copy()
    cv2.rectangle(moved, (0, 0), (100, 100), (255, 255, 255), -1)  # far left: outside the zone's columns
    assert gate.motion(moved) == 0.0
    cv2.rectangle(moved, (400, 150), (500, 300), (0, 0, 0), -1)  # above the zone's floor: a body would be here
    assert gate.motion(moved) > 0.01
