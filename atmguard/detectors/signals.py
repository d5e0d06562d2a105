"""Per-frame geometric signals from landmarks: hand at the ear, head yaw, gaze, presence in the zone.

All geometry is in pixels and scale-free (shoulder widths, face widths), so it holds for any
camera resolution. Definitions, with a picture, are in docs/detectors.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from atmguard.detectors import geometry as G
from atmguard.detectors.config import Thresholds
from atmguard.detectors.geometry import (
    Box,
    Landmarks,
    Point,
    anchor_points,
    body_scale,
    distance,
    expand_box,
    pose_plausible,
    zone_test,
)

HAND_POINTS = {"left": (G.L_WRIST, G.L_PINKY, G.L_INDEX, G.L_THUMB), "right": (G.R_WRIST, G.R_PINKY, G.R_INDEX, G.R_THUMB)}
ARM = {"left": (G.L_SHOULDER, G.L_ELBOW, G.L_WRIST, G.L_EAR), "right": (G.R_SHOULDER, G.R_ELBOW, G.R_WRIST, G.R_EAR)}


@dataclass
class HandAtEar:
    """Why (or why not) a hand is held at the ear in this frame."""

    pose: bool = False
    hands: bool = False
    side: str | None = None
    ratio: float | None = None  # nearest hand point to ear, in shoulder widths (pose) or face widths (hands)
    point: Point | None = None
    ear: Point | None = None

    @property
    def value(self) -> bool:
        return self.pose or self.hands

    @property
    def confidence(self) -> float:
        """Both cues agreeing is surest; the hands+face cue alone is more specific than pose alone."""
        if self.pose and self.hands:
            return 0.95
        if self.hands:
            return 0.8
        return 0.65 if self.pose else 0.0


@dataclass
class FrameSignals:
    """One analysed frame, reduced to what the temporal logic needs."""

    person: bool = False
    in_zone: bool = False
    anchor: Point | None = None
    hand: HandAtEar = field(default_factory=HandAtEar)
    yaw: float | None = None  # + / - = turned to either side; 0 = facing the camera
    yaw_source: str | None = None
    iris: float | None = None  # 0.5 = eyes centred
    head_away: bool = False
    eyes_away: bool = False
    face: bool = False

    @property
    def gaze_away(self) -> bool:
        return self.head_away or self.eyes_away


def _along(p: np.ndarray, origin: np.ndarray, target: np.ndarray) -> float:
    """Projection of p on origin->target: 0 at origin, 1 at target."""
    v = target[:2] - origin[:2]
    den = float(v @ v)
    return float((p[:2] - origin[:2]) @ v / den) if den > 1e-9 else 0.0


def _angle_deg(a: np.ndarray, vertex: np.ndarray, b: np.ndarray) -> float:
    u, v = a[:2] - vertex[:2], b[:2] - vertex[:2]
    den = float(np.hypot(*u) * np.hypot(*v))
    if den < 1e-9:
        return 180.0
    return float(np.degrees(np.arccos(np.clip(float(u @ v) / den, -1.0, 1.0))))


def pose_hand_at_ear(pose: np.ndarray, thr: Thresholds) -> HandAtEar:
    """Pose cue: wrist and elbow visible, arm folded, hand above mouth level, beside (not before) the ear."""
    scale = body_scale(pose)
    mouth = (pose[G.MOUTH_L] + pose[G.MOUTH_R]) / 2
    nose = pose[G.NOSE]
    best = HandAtEar()
    for side, (sh, el, wr, ear_i) in ARM.items():
        ear = pose[ear_i]
        pts = pose[list(HAND_POINTS[side])]
        d = np.hypot(pts[:, 0] - ear[0], pts[:, 1] - ear[1]) / scale
        k = int(np.argmin(d))
        ratio = float(d[k])
        if best.ratio is None or ratio < best.ratio:
            best = HandAtEar(side=side, ratio=ratio, point=(float(pts[k, 0]), float(pts[k, 1])), ear=(float(ear[0]), float(ear[1])))
        visible = pose[wr, 3] >= thr.min_visibility and pose[el, 3] >= thr.min_visibility
        above_mouth = float(pts[:, 1].min()) < float(mouth[1])
        beside = _along(pts[k], nose, ear) > thr.beside_ear
        folded = _angle_deg(pose[sh], pose[el], pose[wr]) < thr.elbow_angle_max_deg
        if visible and ratio < thr.ear_distance and above_mouth and beside and folded:
            return HandAtEar(pose=True, side=side, ratio=ratio, point=(float(pts[k, 0]), float(pts[k, 1])),
                             ear=(float(ear[0]), float(ear[1])))
    return best


def face_hand_at_ear(face: np.ndarray, hands: list[np.ndarray], thr: Thresholds) -> HandAtEar:
    """Hands+face cue: a hand beside the face's ear point, between forehead and chin height."""
    nose, fore, chin = face[G.FM_NOSE_TIP], face[G.FM_FOREHEAD], face[G.FM_CHIN]
    fw = max(distance(face[G.FM_CHEEK_A], face[G.FM_CHEEK_B]), 1.0)
    best = HandAtEar()
    for hand in hands:
        centre = hand.mean(axis=0)
        for side, ear in (("a", face[G.FM_CHEEK_A]), ("b", face[G.FM_CHEEK_B])):
            d = np.hypot(hand[:, 0] - ear[0], hand[:, 1] - ear[1]) / fw
            k = int(np.argmin(d))
            ratio = float(d[k])
            beside = _along(centre, nose, ear)
            height = _along(centre, fore, chin)
            v = ear[:2] - nose[:2]
            frac = float((((hand - nose[:2]) @ v) / max(float(v @ v), 1e-9) > 0.7).mean())
            hit = ratio < thr.hand_face_distance and beside > thr.hand_face_beside and -0.3 < height < thr.hand_face_below_chin and frac >= 0.5
            cand = HandAtEar(hands=hit, side=side, ratio=ratio, point=(float(hand[k, 0]), float(hand[k, 1])),
                             ear=(float(ear[0]), float(ear[1])))
            if hit:
                return cand
            if best.ratio is None or ratio < best.ratio:
                best = cand
    return best


def hands_box(lm: Landmarks) -> Box | None:
    """Where to look for a hand at the ear: around the head (face mesh if found, else pose head points)."""
    if lm.face is not None:
        f = lm.face
        return expand_box(f[:, 0].min(), f[:, 1].min(), f[:, 0].max(), f[:, 1].max(), 2.6, lm)
    if lm.pose is not None:
        head = lm.pose[0:11]
        return expand_box(head[:, 0].min(), head[:, 1].min(), head[:, 0].max(), head[:, 1].max(), 3.2, lm)
    return None


def wants_hands(lm: Landmarks, thr: Thresholds) -> bool:
    """Run the hands model only when a hand may be at the ear (or pose lost the body but a face is there)."""
    if lm.pose is None or not pose_plausible(lm.pose, lm.height):
        return lm.face is not None
    scale = body_scale(lm.pose)
    for side, (_sh, _el, _wr, ear_i) in ARM.items():
        pts = lm.pose[list(HAND_POINTS[side])]
        ear = lm.pose[ear_i]
        if float(np.min(np.hypot(pts[:, 0] - ear[0], pts[:, 1] - ear[1]))) / scale < 2 * thr.ear_distance:
            return True
    return False


def face_yaw(face: np.ndarray) -> float:
    """(|nose-cheekA| - |nose-cheekB|) / sum: 0 frontal, about +-1 in profile; roll does not change it."""
    a = distance(face[G.FM_NOSE_TIP], face[G.FM_CHEEK_A])
    b = distance(face[G.FM_NOSE_TIP], face[G.FM_CHEEK_B])
    return (a - b) / max(a + b, 1e-9)


def pose_yaw(pose: np.ndarray) -> float:
    """Nose offset from the ears' midpoint along the ear-ear line (roll-free), sign-matched to face_yaw."""
    mid = (pose[G.L_EAR, :2] + pose[G.R_EAR, :2]) / 2
    return -0.5 * _along(pose[G.NOSE, :2], mid, pose[G.R_EAR, :2]) if distance(pose[G.L_EAR], pose[G.R_EAR]) > 1 else 0.0


def iris_position(face: np.ndarray) -> float | None:
    """Horizontal iris position within both eyes: 0.5 centred."""
    if face.shape[0] < 478:
        return None
    a = (face[G.FM_IRIS_A, 0] - face[G.FM_EYE_A_OUT, 0]) / max(face[G.FM_EYE_A_IN, 0] - face[G.FM_EYE_A_OUT, 0], 1e-6)
    b = (face[G.FM_IRIS_B, 0] - face[G.FM_EYE_B_IN, 0]) / max(face[G.FM_EYE_B_OUT, 0] - face[G.FM_EYE_B_IN, 0], 1e-6)
    return float((a + b) / 2)


def compute(lm: Landmarks, thr: Thresholds, zone: list[tuple[float, float]] | None, scale: float = 1.0) -> FrameSignals:
    """All per-frame signals; `zone` is in source-frame pixels, `scale` maps source to analysed pixels."""
    s = FrameSignals()
    pose = lm.pose if lm.pose is not None and pose_plausible(lm.pose, lm.height) else None
    s.person = pose is not None or lm.face is not None
    if not s.person:
        return s
    s.in_zone, s.anchor = zone_test(anchor_points(Landmarks(lm.width, lm.height, pose=pose, face=lm.face)), zone, scale)
    if pose is not None:
        s.hand = pose_hand_at_ear(pose, thr)
    if lm.face is not None and lm.hands:
        fh = face_hand_at_ear(lm.face, lm.hands, thr)
        if fh.hands:
            s.hand = HandAtEar(pose=s.hand.pose, hands=True, side=s.hand.side if s.hand.pose else fh.side,
                               ratio=fh.ratio if not s.hand.pose else s.hand.ratio,
                               point=fh.point if not s.hand.pose else s.hand.point,
                               ear=fh.ear if not s.hand.pose else s.hand.ear)
    if lm.face is not None:
        s.face = True
        s.yaw, s.yaw_source = face_yaw(lm.face), "face"
        s.iris = iris_position(lm.face)
    elif thr.pose_yaw_fallback and pose is not None and min(pose[G.L_EAR, 3], pose[G.R_EAR, 3], pose[G.NOSE, 3]) > 0.5:
        s.yaw, s.yaw_source = pose_yaw(pose), "pose"
    if s.yaw is not None:
        s.head_away = abs(s.yaw - thr.yaw_offset) > thr.yaw_away
    if s.iris is not None:
        s.eyes_away = abs(s.iris - 0.5) > thr.iris_away
    return s
