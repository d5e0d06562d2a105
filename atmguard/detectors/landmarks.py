"""MediaPipe models (legacy `mp.solutions`, models inside the 0.10.21 wheel) -> landmarks in pixels.

Only `Pose(model_complexity=1)` works offline (lite/heavy would be downloaded). It is single-person;
with `max_people > 1` a Tasks `PoseLandmarker` built from the same bundled models (pose_bundle.py)
finds everyone on scan frames and the legacy Pose tracks the person followed in between
(follow.py; people.py decides who). Face mesh's short-range face detector misses faces narrower
than about 11% of the frame, so when the face is small (or not found) it runs on a head crop cut
around pose points 0..10. Hands run only when asked (a hand-at-ear candidate needs confirming, or
pose found nobody but a face is there). Nothing here identifies anyone: landmarks are geometry,
kept for one frame.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from atmguard.detectors.follow import Follower
from atmguard.detectors.geometry import FM_NOSE_TIP, NOSE, Box, Landmarks, expand_box
from atmguard.detectors.people import PersonSelector
from atmguard.detectors.pose_bundle import pose_bundle


class _Timer:
    """Wall and process CPU time of one model call, recorded into a Landmarks."""

    def __init__(self, lm: Landmarks, name: str) -> None:
        self.lm, self.name = lm, name

    def __enter__(self) -> None:
        self.t, self.c = time.perf_counter(), time.process_time()

    def __exit__(self, *exc: object) -> None:
        # added up, should a model run more than once on a frame
        lat, cpu = self.lm.latency_ms, self.lm.cpu_ms
        lat[self.name] = lat.get(self.name, 0.0) + (time.perf_counter() - self.t) * 1000
        cpu[self.name] = cpu.get(self.name, 0.0) + (time.process_time() - self.c) * 1000


def _to_rgb(image_bgr: np.ndarray) -> np.ndarray:
    # heavy: imported on first use, never at import (package docstring)
    import cv2

    return np.ascontiguousarray(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB))


class MultiPose:
    """Tasks PoseLandmarker (up to `max_people`) on the bundle built from the wheel's models, image mode.

    Image mode: every call runs the person detector, then the landmark model on each person found
    (about 31 ms for one person, 50 for two, on a core). It runs on scan frames only (follow.py);
    video mode would run the detector on every frame while fewer than `max_people` are tracked.
    """

    def __init__(self, max_people: int) -> None:
        # heavy: imported on first use, never at import (package docstring)
        from mediapipe.tasks.python import BaseOptions, vision

        opts = vision.PoseLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(pose_bundle())), running_mode=vision.RunningMode.IMAGE,
            num_poses=max_people, min_pose_detection_confidence=0.5, min_pose_presence_confidence=0.5,
        )
        self._task: Any = vision.PoseLandmarker.create_from_options(opts)

    def detect(self, rgb: np.ndarray) -> list[np.ndarray]:
        """Every pose in the image, each (33, 4): x, y normalised to [0, 1], z, visibility."""
        # heavy: imported on first use, never at import (package docstring)
        import mediapipe as mp

        res = self._task.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb))
        return [np.array([(p.x, p.y, p.z, p.visibility or 0.0) for p in pose], dtype=np.float64)
                for pose in res.pose_landmarks]

    def close(self) -> None:
        self._task.close()


class LandmarkModels:
    """Pose + face mesh (iris) + hands for one camera (tracking state is per stream).

    `static=True` is for still photographs (every call detects afresh). `max_people=1` runs the
    legacy single-person Pose; more adds `MultiPose` for scans and a `Follower` that keeps the
    legacy Pose on the person chosen (`process(..., selector=, t=)`; `scan_every_s` apart, the
    schedule shifted by `scan_phase` seconds so that cameras started together do not scan together).
    """

    def __init__(self, *, static: bool = False, face_crop_below: float = 0.16, use_hands: bool = True,
                 hands_complexity: int = 0, max_people: int = 1, scan_every_s: float = 1.0,
                 scan_phase: float = 0.0) -> None:
        # heavy: imported on first use, never at import (package docstring)
        import mediapipe as mp

        self.static = static
        self.face_crop_below = face_crop_below
        self.use_hands = use_hands
        self.hands_complexity = hands_complexity
        self.max_people = max_people
        sol: Any = mp.solutions
        self._pose: Any = None
        self._multi: MultiPose | None = None
        self.follower: Follower | None = None
        if max_people > 1:
            self._multi = MultiPose(max_people)
            self.follower = Follower(self, scan_every_s=scan_every_s, phase=scan_phase)
            self._selector = PersonSelector(None)  # when the caller gives none: the largest person anywhere
        if max_people == 1 or not static:
            self._pose = sol.pose.Pose(
                static_image_mode=static, model_complexity=1, smooth_landmarks=not static,
                min_detection_confidence=0.5, min_tracking_confidence=0.5,
            )
        # two face meshes: one sees whole frames, one sees head crops (their tracking states differ)
        self._face = sol.face_mesh.FaceMesh(
            static_image_mode=static, max_num_faces=1, refine_landmarks=True, min_detection_confidence=0.5,
        )
        self._face_crop = sol.face_mesh.FaceMesh(
            static_image_mode=True, max_num_faces=1, refine_landmarks=True, min_detection_confidence=0.4,
        )
        self._hands: Any = None
        self._sol = sol

    def close(self) -> None:
        """Release the MediaPipe graphs."""
        for m in (self._pose, self._multi, self._face, self._face_crop, self._hands):
            if m is not None:
                m.close()

    def __enter__(self) -> LandmarkModels:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- models -------------------------------------------------------------------------------
    @property
    def multi(self) -> bool:
        """Several people are looked for (and one must be selected)."""
        return self._multi is not None

    def track_pose(self, rgb: np.ndarray, lm: Landmarks) -> np.ndarray | None:
        """The legacy single-person Pose (tracking mode on video): one person, (33, 4) in pixels, or None."""
        with _Timer(lm, "pose"):
            res = self._pose.process(rgb)
        if res.pose_landmarks is None:
            return None
        arr = np.array([(p.x, p.y, p.z, p.visibility) for p in res.pose_landmarks.landmark], dtype=np.float64)
        arr[:, 0] *= lm.width
        arr[:, 1] *= lm.height
        return arr

    def reset_tracker(self) -> None:
        """Make the legacy Pose forget whom it tracked (region, landmark and visibility smoothing).

        Its next call detects afresh and costs about 60 ms more (the graph restarts)."""
        self._pose.reset()

    def scan_people(self, rgb: np.ndarray, lm: Landmarks) -> list[np.ndarray]:
        """Everyone the multi-person model finds (image mode), each (33, 4) in pixels."""
        assert self._multi is not None, "scan_people needs max_people > 1"
        with _Timer(lm, "pose_scan"):
            found = self._multi.detect(rgb)
        for arr in found:
            arr[:, 0] *= lm.width
            arr[:, 1] *= lm.height
        return found

    def pose(self, rgb: np.ndarray, lm: Landmarks, selector: PersonSelector | None = None, scale: float = 1.0,
             t: float | None = None) -> None:
        """`lm.pose` = the person followed, `lm.people` = everyone (as of the last scan, multi-person)."""
        if self.follower is not None:
            self.follower.step(rgb, lm, selector or self._selector, scale, t)
            return
        found = self.track_pose(rgb, lm)
        lm.people = [found] if found is not None else []
        lm.pose = found

    def face(self, rgb: np.ndarray, lm: Landmarks) -> None:
        """Face mesh on the whole frame, or on a head crop from pose when the head is small."""
        with _Timer(lm, "face"):
            self._face_any(rgb, lm)

    def _face_any(self, rgb: np.ndarray, lm: Landmarks) -> None:
        box = self._head_box(lm)
        small = box is not None and (box[2] - box[0]) < self.face_crop_below * lm.width * 2.5
        if box is not None and small:
            lm.face = self._face_on_crop(rgb, box, lm)
            lm.face_from_crop = lm.face is not None
        else:
            res = self._face.process(rgb)
            face = None
            if res.multi_face_landmarks:
                pts = res.multi_face_landmarks[0].landmark
                face = np.array([(p.x * lm.width, p.y * lm.height) for p in pts], dtype=np.float64)
                if not _face_of_followed(face, lm, box):
                    face = None  # the whole-frame mesh tracks someone else's face: look at this person's head
            if face is not None:
                lm.face = face
            elif box is not None:
                lm.face = self._face_on_crop(rgb, box, lm)
                lm.face_from_crop = lm.face is not None

    def hands(self, rgb: np.ndarray, lm: Landmarks, box: Box | None = None) -> None:
        """Hands model, on a crop around the head when `box` is given (hands at the ear are near it)."""
        if self._hands is None:
            self._hands = self._sol.hands.Hands(
                static_image_mode=True, max_num_hands=2, model_complexity=self.hands_complexity,
                min_detection_confidence=0.4,
            )
        x0, y0, x1, y1 = box if box is not None else (0, 0, lm.width, lm.height)
        crop = np.ascontiguousarray(rgb[y0:y1, x0:x1])
        found: list[np.ndarray] = []
        if crop.size:
            with _Timer(lm, "hands"):
                res = self._hands.process(crop)
            for hand in res.multi_hand_landmarks or []:
                found.append(np.array(
                    [(x0 + p.x * (x1 - x0), y0 + p.y * (y1 - y0)) for p in hand.landmark], dtype=np.float64
                ))
        lm.hands = found

    def process(self, image_bgr: np.ndarray, *, face_if: Callable[[Landmarks], bool] | None = None,
                selector: PersonSelector | None = None, scale: float = 1.0, t: float | None = None) -> Landmarks:
        """Pose (multi-person: `selector` picks the person followed, zone in source pixels x `scale`;
        `t` = frame time in seconds, None = scan every call), then face mesh (unless `face_if(landmarks)`
        says no); hands run through `hands()` when needed."""
        h, w = image_bgr.shape[:2]
        lm = Landmarks(width=w, height=h)
        rgb = _to_rgb(image_bgr)
        self._last_rgb = rgb
        self.pose(rgb, lm, selector, scale, t)
        if face_if is None or face_if(lm):
            self.face(rgb, lm)
        return lm

    def last_rgb(self) -> np.ndarray:
        """The RGB image of the last `process` call (hands reuse it)."""
        return self._last_rgb

    # -- crops -------------------------------------------------------------------------------
    def _head_box(self, lm: Landmarks) -> Box | None:
        if lm.pose is None:
            return None
        head = lm.pose[0:11]
        vis = head[head[:, 3] > 0.3]
        if len(vis) < 3:
            return None
        return expand_box(vis[:, 0].min(), vis[:, 1].min(), vis[:, 0].max(), vis[:, 1].max(), 2.5, lm)

    def _face_on_crop(self, rgb: np.ndarray, box: Box, lm: Landmarks) -> np.ndarray | None:
        # heavy: imported on first use, never at import (package docstring)
        import cv2

        x0, y0, x1, y1 = box
        crop = rgb[y0:y1, x0:x1]
        if crop.size == 0:
            return None
        # upscale small crops: the face model wants ~192 px faces
        scale = max(1.0, 256.0 / max(1, x1 - x0))
        if scale > 1.0:
            crop = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
        res = self._face_crop.process(np.ascontiguousarray(crop))
        if not res.multi_face_landmarks:
            return None
        pts = res.multi_face_landmarks[0].landmark
        return np.array([(x0 + p.x * (x1 - x0), y0 + p.y * (y1 - y0)) for p in pts], dtype=np.float64)


def _face_of_followed(face: np.ndarray, lm: Landmarks, box: Box | None) -> bool:
    """With several people in view, a whole-frame face belongs to the followed person only when its
    nose tip is inside their head box and nearer their pose nose than anyone else's."""
    if lm.pose is None or len(lm.people) < 2:
        return True
    tip = face[FM_NOSE_TIP]
    if box is not None and not (box[0] <= tip[0] <= box[2] and box[1] <= tip[1] <= box[3]):
        return False
    dists = [float(np.hypot(*(p[NOSE, :2] - tip))) for p in lm.people]
    return float(np.hypot(*(lm.pose[NOSE, :2] - tip))) <= min(dists)
