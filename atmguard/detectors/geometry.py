"""Landmark data and the pure geometry on it: indices, boxes, body scale, zone tests.

Both sides of the detectors need this: the model runners (landmarks.py, follow.py, people.py)
to crop, follow and choose a person, and the per-frame signals (signals.py) to judge them. It
imports no model runner, no MediaPipe and no OpenCV, so those modules depend on it and never on
each other in a circle. All coordinates are full-frame pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# pose landmark indices (BlazePose 33)
NOSE, L_EYE_OUT, R_EYE_OUT, L_EAR, R_EAR, MOUTH_L, MOUTH_R = 0, 3, 6, 7, 8, 9, 10
L_SHOULDER, R_SHOULDER, L_ELBOW, R_ELBOW, L_WRIST, R_WRIST = 11, 12, 13, 14, 15, 16
L_PINKY, R_PINKY, L_INDEX, R_INDEX, L_THUMB, R_THUMB = 17, 18, 19, 20, 21, 22
L_HIP, R_HIP, L_KNEE, R_KNEE, L_ANKLE, R_ANKLE = 23, 24, 25, 26, 27, 28
L_HEEL, R_HEEL, L_FOOT, R_FOOT = 29, 30, 31, 32

# face mesh indices (468 + 10 iris with refinement)
FM_NOSE_TIP, FM_CHEEK_A, FM_CHEEK_B = 1, 234, 454
FM_CHIN, FM_FOREHEAD = 152, 10
FM_EYE_A_OUT, FM_EYE_A_IN, FM_EYE_B_IN, FM_EYE_B_OUT = 33, 133, 362, 263
FM_IRIS_A, FM_IRIS_B = 468, 473
FM_MOUTH_A, FM_MOUTH_B = 61, 291

ANCHORS = (L_HIP, R_HIP, L_ANKLE, R_ANKLE, L_HEEL, R_HEEL)
TORSO = (L_SHOULDER, R_SHOULDER, L_HIP, R_HIP)

Point = tuple[float, float]
Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, x1 and y1 exclusive (a crop's slice bounds)


@dataclass
class Landmarks:
    """One frame's landmarks in full-frame pixel coordinates; None where a model found nothing."""

    width: int
    height: int
    pose: np.ndarray | None = None  # (33, 4): x, y, z (unused), visibility; the person followed
    people: list[np.ndarray] = field(default_factory=list)  # every pose found, each (33, 4); `pose` is one of them
    scanned: bool = False  # multi-person: everyone was looked for on this frame (else the others are as last seen)
    face: np.ndarray | None = None  # (478, 2)
    hands: list[np.ndarray] = field(default_factory=list)  # each (21, 2)
    face_from_crop: bool = False
    latency_ms: dict[str, float] = field(default_factory=dict)  # wall time per model
    cpu_ms: dict[str, float] = field(default_factory=dict)  # CPU time of the process (all threads) per model

    @property
    def model_ms(self) -> float:
        """Time spent inside the models for this frame."""
        return sum(self.latency_ms.values())

    @property
    def model_cpu_ms(self) -> float:
        """CPU time the models used for this frame (robust to other load on the machine)."""
        return sum(self.cpu_ms.values())


def distance(a: np.ndarray, b: np.ndarray) -> float:
    """Distance between two landmarks in the image plane (x, y; z and visibility ignored)."""
    return float(np.hypot(*(a[:2] - b[:2])))


def expand_box(x0: float, y0: float, x1: float, y1: float, factor: float, lm: Landmarks) -> Box:
    """A square box around (x0,y0,x1,y1), `factor` times its larger side, clipped to the frame."""
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    side = max(x1 - x0, y1 - y0, 8.0) * factor
    return (
        int(max(0, cx - side / 2)), int(max(0, cy - side / 2)),
        int(min(lm.width, cx + side / 2)), int(min(lm.height, cy + side / 2)),
    )


def pose_plausible(pose: np.ndarray, height: int) -> bool:
    """Pose invents people on furniture: a real torso is long compared with its shoulders."""
    sh = (pose[L_SHOULDER, :2] + pose[R_SHOULDER, :2]) / 2
    hp = (pose[L_HIP, :2] + pose[R_HIP, :2]) / 2
    torso = float(np.hypot(*(sh - hp)))
    sw = distance(pose[L_SHOULDER], pose[R_SHOULDER])
    return torso >= 0.6 * sw and torso >= 0.04 * height


def body_scale(pose: np.ndarray) -> float:
    """Shoulder width, or 1.5 ear-to-ear when the shoulders are foreshortened (body turned)."""
    return max(distance(pose[L_SHOULDER], pose[R_SHOULDER]), 1.5 * distance(pose[L_EAR], pose[R_EAR]), 1.0)


def point_in_polygon(p: Point, poly: list[tuple[float, float]]) -> bool:
    """Even-odd ray casting."""
    x, y = p
    inside = False
    n = len(poly)
    for i in range(n):
        x1, y1 = poly[i]
        x2, y2 = poly[(i + 1) % n]
        if (y1 > y) != (y2 > y) and x < (x2 - x1) * (y - y1) / (y2 - y1) + x1:
            inside = not inside
    return inside


def anchor_points(lm: Landmarks, min_vis: float = 0.5) -> list[Point]:
    """Feet and hips (Frigate's zone rule), or the bottom of the visible body when they are out of view."""
    if lm.pose is not None:
        pose = lm.pose
        pts = [(float(pose[i, 0]), float(pose[i, 1])) for i in ANCHORS
               if pose[i, 3] >= min_vis and 0 <= pose[i, 0] < lm.width and 0 <= pose[i, 1] < lm.height]
        if pts:
            return pts
        vis = pose[(pose[:, 3] >= min_vis) & (pose[:, 1] < lm.height) & (pose[:, 1] >= 0)]
        if len(vis):
            # centred on the visible torso (shoulders, hips): a raised arm must not carry a person into the zone
            torso = pose[list(TORSO)]
            torso = torso[torso[:, 3] >= min_vis]
            x = float(torso[:, 0].mean()) if len(torso) else float(vis[:, 0].mean())
            return [(x, float(min(vis[:, 1].max(), lm.height - 1)))]
    if lm.face is not None:
        return [(float(lm.face[:, 0].mean()), float(min(lm.face[:, 1].max(), lm.height - 1)))]
    return []


def zone_test(anchors: list[Point], zone: list[tuple[float, float]] | None, scale: float = 1.0) -> tuple[bool, Point | None]:
    """(in the zone?, the anchor point to show): any anchor inside counts; no zone = the whole frame."""
    if zone is None:
        return True, anchors[0] if anchors else None
    zpts = [(x * scale, y * scale) for x, y in zone]
    inside = [p for p in anchors if point_in_polygon(p, zpts)]
    first = inside or anchors
    return bool(inside), first[0] if first else None
