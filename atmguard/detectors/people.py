"""Several people in view: which one the detectors follow.

The multi-person pose model finds everyone; only people whose feet or hips (or, out of view,
the bottom of the visible body) are inside the ATM zone count, as Frigate does with zones. Among
several in the zone the detectors follow the one nearest the camera (the largest body: shoulder
width or torso length, whichever is larger), which for a camera at or above the ATM is the
customer at the machine, not the next person in the queue. The person followed in the last
frame keeps being followed unless someone else in the zone is clearly larger (`STICKY`), so a
call counted over seconds stays one person's call. Geometry only: nobody is identified.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from atmguard.detectors import geometry as G
from atmguard.detectors.geometry import Landmarks, anchor_points, body_scale, pose_plausible, zone_test

STICKY = 1.25  # the followed person's size counts this much more than a newcomer's
SAME_PERSON = 0.5  # torso centres closer than this many body sizes: the same person as last frame
DUPLICATE = 0.3  # two poses this close (body sizes) and of similar size are one person found twice
# one analysed frame to the next (0.2 s at 5 fps, 0.5 s at 2 fps) a walker's torso moves about half a
# body size; a neighbour's is two or more away, or (a person behind) of another size
TRACK_JUMP = 1.0
TRACK_SIZE = (0.7, 1.43)


def torso_centre(pose: np.ndarray) -> np.ndarray:
    """Midpoint of shoulders and hips (pose 11, 12, 23, 24), in pixels."""
    centre: np.ndarray = pose[[G.L_SHOULDER, G.R_SHOULDER, G.L_HIP, G.R_HIP], :2].mean(axis=0)
    return centre


def body_size(pose: np.ndarray) -> float:
    """Shoulder width (or 1.5 ear-to-ear) or torso length, whichever is larger: robust to a turned body."""
    sh = (pose[G.L_SHOULDER, :2] + pose[G.R_SHOULDER, :2]) / 2
    hp = (pose[G.L_HIP, :2] + pose[G.R_HIP, :2]) / 2
    return max(body_scale(pose), float(np.hypot(*(sh - hp))))


def dedupe(people: list[np.ndarray]) -> list[np.ndarray]:
    """Drop a pose that repeats another (the Tasks tracker can keep a person twice for a frame)."""
    kept: list[np.ndarray] = []
    for p in people:
        c, s = torso_centre(p), body_size(p)
        dup = None
        for j, q in enumerate(kept):
            sq = body_size(q)
            close = float(np.hypot(*(c - torso_centre(q)))) < DUPLICATE * max(s, sq)
            if close and 0.7 < s / max(sq, 1e-6) < 1.4:
                dup = j
                break
        if dup is None:
            kept.append(p)
        elif float(p[:25, 3].mean()) > float(kept[dup][:25, 3].mean()):
            kept[dup] = p
    return kept


def _apart(a: np.ndarray, b: np.ndarray) -> float | None:
    """Torso centres' distance in body sizes, None when the sizes differ too much to be one person."""
    sa, sb = body_size(a), body_size(b)
    if not TRACK_SIZE[0] < sa / max(sb, 1e-6) < TRACK_SIZE[1]:
        return None
    return float(np.hypot(*(torso_centre(a) - torso_centre(b)))) / max(sa, sb, 1e-6)


def same_person(a: np.ndarray, b: np.ndarray, jump: float = TRACK_JUMP) -> bool:
    """Two poses (one frame apart) plausibly of one person: near and of similar size."""
    d = _apart(a, b)
    return d is not None and d < jump


def match(pose: np.ndarray, people: list[np.ndarray], jump: float = TRACK_JUMP) -> int | None:
    """Which of `people` is `pose`'s person: the nearest of similar size within `jump` body sizes.

    Nearest, not merely near: two people standing close (centres a third of a body size apart on
    the two-men clip) are both within any threshold loose enough for a walker's step.
    """
    best: tuple[float, int] | None = None
    for i, q in enumerate(people):
        d = _apart(pose, q)
        if d is not None and d < jump and (best is None or d < best[0]):
            best = (d, i)
    return None if best is None else best[1]


@dataclass
class Choice:
    """Who is followed in this frame."""

    index: int | None = None  # into the frame's people; None = nobody found
    in_zone: bool = False  # the followed person is in the zone (False: the largest person outside it)
    in_zone_count: int = 0  # plausible people in the zone


class PersonSelector:
    """Per camera: picks the person to follow each frame, keeping the same one while they stay."""

    def __init__(self, zone: list[tuple[float, float]] | None, sticky: float = STICKY) -> None:
        self.zone = zone
        self.sticky = sticky
        self._last: tuple[np.ndarray, float] | None = None  # torso centre, size of the person followed
        self.choice = Choice()  # the last decision (a scan's, or kept while the tracker follows the person)

    def reset(self) -> None:
        self._last = None
        self.choice = Choice()

    def counts(self, pose: np.ndarray, width: int, height: int, scale: float = 1.0) -> bool:
        """This person counts: a plausible body whose anchors are in the zone."""
        return pose_plausible(pose, height) and \
            zone_test(anchor_points(Landmarks(width, height, pose=pose)), self.zone, scale)[0]

    def keep(self, pose: np.ndarray, in_zone: bool, others_in_zone: int) -> Choice:
        """Between scans: the tracker still holds the person followed (`pose`, index 0 of the frame's people)."""
        self._last = (torso_centre(pose), body_size(pose)) if in_zone else None
        self.choice = Choice(index=0, in_zone=in_zone, in_zone_count=others_in_zone + int(in_zone))
        return self.choice

    def choose(self, people: list[np.ndarray], width: int, height: int, scale: float = 1.0) -> Choice:
        """`people` in analysed-frame pixels; `scale` maps the zone (source pixels) to them."""
        self.choice = self._choose(people, width, height, scale)
        return self.choice

    def _choose(self, people: list[np.ndarray], width: int, height: int, scale: float) -> Choice:
        if not people:
            self._last = None
            return Choice()
        sizes = [body_size(p) for p in people]
        plausible = [i for i, p in enumerate(people) if pose_plausible(p, height)]
        inside = [i for i in plausible if self.counts(people[i], width, height, scale)]
        if not inside:
            self._last = None
            pool = plausible or list(range(len(people)))
            return Choice(index=max(pool, key=sizes.__getitem__), in_zone=False, in_zone_count=0)

        def score(i: int) -> float:
            if self._last is not None:
                centre, size = self._last
                if float(np.hypot(*(torso_centre(people[i]) - centre))) < SAME_PERSON * max(size, sizes[i]):
                    return sizes[i] * self.sticky
            return sizes[i]

        best = max(inside, key=score)
        self._last = (torso_centre(people[best]), sizes[best])
        return Choice(index=best, in_zone=True, in_zone_count=len(inside))
