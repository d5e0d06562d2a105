"""Several people in view, at about the cost of one: scan everyone now and then, track one in between.

The multi-person model (a Tasks `PoseLandmarker`, pose_bundle.py) runs its person detector on
every frame in video mode while fewer than `max_people` are tracked, so with one person in view
it costs about a third more than the single-person model. Facts, though, come from one person:
the one followed (people.py). So the multi-person model runs only on *scan* frames, in image
mode, to see everyone and choose who is followed (about once a second, `scan_every_s`); on the
frames between, the legacy single-person Pose tracks that person (its cheap tracking mode:
landmarks from last frame's region, no detector). A scan also runs at once when the tracker
loses the person, jumps to someone else, or the person followed leaves the zone. After the
motion gate let the models rest (an idle camera's periodic recheck), the tracker looks first and
a scan follows only if it finds someone real, so idle cameras cost what they did.

Steering the tracker: it follows whoever it locked onto. When a scan chooses someone else, the
tracker is reset (a lost track is not enough: its visibility filter would start the new person
from the old one's values, feet hidden, and take a second to rise), and its next detection sees
only the chosen person: the frame is greyed outside a box around them (coordinates unchanged, so
nothing needs mapping back). It re-detects inside that box too whenever it lost its person while
others are in view.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from atmguard.detectors.geometry import Box, Landmarks, pose_plausible
from atmguard.detectors.people import Choice, PersonSelector, dedupe, match, same_person

MASK_PAD = 0.35  # the followed person's box, widened by this share of its larger side on each side
GREY = 128  # outside the box around the person followed, for a re-detection
EPS = 1e-6  # frame times are microseconds: 1.4 - 0.4 must count as a whole second
SAME_FRAME = 0.5  # the two models' poses of one person on one frame differ by far less (body sizes)


class PoseModels(Protocol):
    """The two pose models a Follower drives; LandmarkModels (landmarks.py) is one.

    A protocol, so that this module needs nothing of the model runners that build a Follower."""

    def scan_people(self, rgb: np.ndarray, lm: Landmarks) -> list[np.ndarray]:
        """Everyone the multi-person model finds, each (33, 4) in pixels."""
        ...

    def track_pose(self, rgb: np.ndarray, lm: Landmarks) -> np.ndarray | None:
        """The single-person tracker's person, (33, 4) in pixels, or None."""
        ...

    def reset_tracker(self) -> None:
        """Make the tracker forget whom it tracked."""
        ...


def person_box(pose: np.ndarray, width: int, height: int, pad: float = MASK_PAD) -> Box:
    """Box around a pose's points (those reasonably visible), widened, clipped to the frame."""
    pts = pose[pose[:, 3] > 0.3] if int((pose[:, 3] > 0.3).sum()) >= 3 else pose
    x0, y0 = float(pts[:, 0].min()), float(pts[:, 1].min())
    x1, y1 = float(pts[:, 0].max()), float(pts[:, 1].max())
    p = pad * max(x1 - x0, y1 - y0, 8.0)
    return (int(max(0, x0 - p)), int(max(0, y0 - p)), int(min(width, x1 + p)), int(min(height, y1 + p)))


class Follower:
    """Per camera (state follows one stream): who is followed, and the tracker kept on them.

    `step(rgb, lm, selector, scale, t)` fills `lm.people`, `lm.pose` and returns the choice.
    `t` is the frame time in seconds; None (still photos, no timeline) scans every call.
    """

    def __init__(self, models: PoseModels, *, scan_every_s: float = 1.0, phase: float = 0.0) -> None:
        self.models = models
        self.scan_every_s = scan_every_s
        # cameras started together would scan together (a burst every second on a shared core): each
        # camera's schedule is shifted by its own phase, 0 .. scan_every_s
        self.phase = phase % scan_every_s
        self._last_scan: float | None = None
        self._last_t: float | None = None  # the previous frame analysed
        self._target: np.ndarray | None = None  # the person followed, as last seen
        self._others: list[np.ndarray] = []  # everyone else at the last scan
        self._others_in_zone = 0
        self._tracked: np.ndarray | None = None  # the tracker's last answer (None: it detects afresh next call)
        self._steer = False  # the tracker holds someone else: make it let go
        self._was_in = False  # the tracker's last pose counted in the zone (its own verdicts are compared)

    def step(self, rgb: np.ndarray, lm: Landmarks, selector: PersonSelector, scale: float = 1.0,
             t: float | None = None) -> Choice:
        if t is None:
            return self._scan(rgb, lm, selector, scale, t, tracked=None, tracker_ran=False)
        resting = self._last_t is not None and not 0 <= t - self._last_t <= self.scan_every_s + EPS
        self._last_t = t
        if self._last_scan is None or not 0 <= t - self._last_scan < self.scan_every_s - EPS:
            if not resting:
                return self._scan(rgb, lm, selector, scale, t, tracked=None, tracker_ran=False)
            # the models rested (the motion gate skipped frames): the tracker looks first, and a scan
            # follows only for someone real; an idle camera's rechecks cost what the single-person model's do
            p = self._track(rgb, lm)
            if p is not None and pose_plausible(p, lm.height):
                return self._scan(rgb, lm, selector, scale, t, tracked=p, tracker_ran=True)
            self._target, self._others, self._others_in_zone, self._was_in = p, [], 0, False
            lm.people, lm.pose = ([p], p) if p is not None else ([], None)
            return selector.choose(lm.people, lm.width, lm.height, scale)
        p = self._track(rgb, lm)
        if self._target is None:
            # nobody followed at the last scan: whoever the tracker now finds is, until the next scan
            choice = selector.choose([p] if p is not None else [], lm.width, lm.height, scale)
            self._target, self._was_in = p, choice.in_zone
            lm.people, lm.pose = ([p], p) if p is not None else ([], None)
            return choice
        if p is None or not same_person(p, self._target):
            if pose_plausible(self._target, lm.height):
                return self._scan(rgb, lm, selector, scale, t, tracked=p, tracker_ran=True)  # lost, or jumped
            # a "person" on furniture flickering in and out is not worth a scan each time
            self._target, self._was_in = p, False
            lm.people, lm.pose = ([p, *self._others], p) if p is not None else (list(self._others), None)
            return selector.choose(lm.people, lm.width, lm.height, scale) if p is None else \
                selector.keep(p, selector.counts(p, lm.width, lm.height, scale), self._others_in_zone)
        in_zone = selector.counts(p, lm.width, lm.height, scale)
        # left the zone (by the tracker's own verdicts: at the zone's edge the two models may disagree)
        was_in, self._was_in = self._was_in, in_zone
        if was_in and not in_zone:
            return self._scan(rgb, lm, selector, scale, t, tracked=p, tracker_ran=True)  # someone else there?
        self._target = p
        lm.people, lm.pose = [p, *self._others], p
        return selector.keep(p, in_zone, self._others_in_zone)

    def _scan(self, rgb: np.ndarray, lm: Landmarks, selector: PersonSelector, scale: float, t: float | None,
              tracked: np.ndarray | None, tracker_ran: bool) -> Choice:
        people = dedupe(self.models.scan_people(rgb, lm))
        lm.scanned = True
        first = self._last_scan is None
        self._last_scan = t - self.phase if first and t is not None else t
        if t is not None and not tracker_ran and self._target is not None and pose_plausible(self._target, lm.height) \
                and match(self._target, people) is None:
            # the detector missed the person followed (small, turned away): the tracker may still hold them
            tracked, tracker_ran = self._track(rgb, lm), True
        held = None  # the scan's person the tracker holds
        if tracker_ran and tracked is not None:
            held = match(tracked, people, jump=SAME_FRAME)
            if held is None:
                people.append(tracked)
                held = len(people) - 1
        elif self._tracked is not None:
            held = match(self._tracked, people)  # last frame's answer: they moved a little since
        choice = selector.choose(people, lm.width, lm.height, scale)
        chosen = people[choice.index] if choice.index is not None else None
        lm.people, lm.pose = people, chosen
        self._others = [q for q in people if q is not chosen]
        self._others_in_zone = choice.in_zone_count - int(choice.in_zone)
        if chosen is not None and held != choice.index and (tracked if tracker_ran else self._tracked) is not None:
            self._steer = True  # it holds someone else
        self._target = chosen
        tracked_now = tracked if tracker_ran else None
        self._was_in = tracked_now is not None and not self._steer and selector.counts(tracked_now, lm.width, lm.height, scale)
        return choice

    def _track(self, rgb: np.ndarray, lm: Landmarks) -> np.ndarray | None:
        """The single-person tracker on this frame, kept on the person followed."""
        if self._steer:
            self.models.reset_tracker()  # it lets go of whoever it held, smoothing (visibility too) included
            self._tracked, self._steer = None, False
        image = rgb
        if self._tracked is None and self._target is not None and self._others:
            # it detects afresh on this call: show it only the person followed
            x0, y0, x1, y1 = person_box(self._target, lm.width, lm.height)
            image = np.full_like(rgb, GREY)
            image[y0:y1, x0:x1] = rgb[y0:y1, x0:x1]
        self._tracked = self.models.track_pose(image, lm)
        return self._tracked
