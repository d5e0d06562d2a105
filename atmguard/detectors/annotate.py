"""Draw what the detectors saw (landmarks, zone, signals, active behaviours) so an operator sees why."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import numpy as np

from atmguard.detectors import geometry as G
from atmguard.detectors.pipeline import CameraPipeline, FrameResult
from atmguard.detectors.show import MjpegServer, gui_available

POSE_EDGES = [(11, 12), (11, 13), (13, 15), (12, 14), (14, 16), (11, 23), (12, 24), (23, 24), (23, 25), (25, 27),
              (24, 26), (26, 28), (15, 19), (16, 20), (0, 7), (0, 8), (9, 10)]
GREEN, RED, YELLOW, CYAN, WHITE, ORANGE = (80, 200, 80), (60, 60, 230), (0, 220, 255), (230, 200, 0), (255, 255, 255), (0, 140, 255)
GREY = (160, 160, 160)


def draw(image: np.ndarray, res: FrameResult, pipe: CameraPipeline) -> np.ndarray:
    """A copy of the frame with landmarks, the zone, the per-frame signals and the active behaviours."""
    # heavy: imported on first use, never at import (package docstring)
    import cv2

    out = image.copy()
    h, w = out.shape[:2]
    k = 1.0 / res.scale if res.scale else 1.0
    thick = max(1, int(round(w / 400)))
    font = max(0.35, w / 1400)
    if pipe.cfg.zone:
        pts = np.array(pipe.cfg.zone, dtype=np.int32).reshape(-1, 1, 2)
        cv2.polylines(out, [pts], True, CYAN, thick)
    lm, s = res.landmarks, res.signals
    if lm is not None:
        for other in lm.people:  # everyone else the multi-person model found: thin grey
            if other is lm.pose:
                continue
            q = other[:, :2] * k
            for a, b in POSE_EDGES:
                if other[a, 3] > 0.3 and other[b, 3] > 0.3:
                    cv2.line(out, (int(q[a, 0]), int(q[a, 1])), (int(q[b, 0]), int(q[b, 1])), GREY, max(1, thick // 2))
    if lm is not None and lm.pose is not None:
        p = lm.pose[:, :2] * k
        for a, b in POSE_EDGES:
            if lm.pose[a, 3] > 0.3 and lm.pose[b, 3] > 0.3:
                cv2.line(out, (int(p[a, 0]), int(p[a, 1])), (int(p[b, 0]), int(p[b, 1])), GREEN, thick)
        for i in range(33):
            col = YELLOW if i in (G.L_WRIST, G.R_WRIST, G.L_EAR, G.R_EAR) else GREEN
            cv2.circle(out, (int(p[i, 0]), int(p[i, 1])), thick + 1, col, -1)
    if lm is not None and lm.face is not None:
        f = lm.face * k
        for i in range(0, 468, 6):
            cv2.circle(out, (int(f[i, 0]), int(f[i, 1])), 1, WHITE, -1)
        for i in (G.FM_CHEEK_A, G.FM_CHEEK_B, G.FM_NOSE_TIP) + ((G.FM_IRIS_A, G.FM_IRIS_B) if len(f) >= 478 else ()):
            cv2.circle(out, (int(f[i, 0]), int(f[i, 1])), thick + 2, ORANGE, -1)
    if lm is not None:
        for hand in lm.hands:
            for x, y in hand * k:
                cv2.circle(out, (int(x), int(y)), thick + 1, RED, -1)
    lines: list[tuple[str, tuple[int, int, int]]] = []
    if s is None:
        lines.append(("models idle (no motion, nobody)", WHITE))
    else:
        if s.anchor is not None:
            cv2.drawMarker(out, (int(s.anchor[0] * k), int(s.anchor[1] * k)), CYAN if s.in_zone else RED,
                           cv2.MARKER_TILTED_CROSS, 6 * thick, thick)
        ear_cue = s.hand
        if ear_cue.point is not None and ear_cue.ear is not None and (ear_cue.ratio or 0) < 1.0:
            cv2.line(out, (int(ear_cue.point[0] * k), int(ear_cue.point[1] * k)), (int(ear_cue.ear[0] * k), int(ear_cue.ear[1] * k)),
                     RED if ear_cue.value else YELLOW, thick)
        cues = "+".join(c for c, on in (("pose", ear_cue.pose), ("hands", ear_cue.hands)) if on) or "no"
        ratio = f" d={ear_cue.ratio:.2f}" if ear_cue.ratio is not None else ""
        lines.append((f"hand at ear: {cues}{ratio}", RED if ear_cue.value else WHITE))
        if s.yaw is not None:
            lines.append((f"yaw {s.yaw:+.2f} ({s.yaw_source}) rate {pipe.tracker.glances.yaw_rate:+.1f}/s", RED if s.head_away else WHITE))
        if s.iris is not None:
            lines.append((f"iris {s.iris:.2f}", RED if s.eyes_away else WHITE))
        where = "in zone" if s.in_zone else ("outside zone" if s.person else "none")
        if lm is not None and len(lm.people) > 1:
            seen = "in view" if lm.scanned else "in view at the last scan"  # between scans others are as last seen
            where += f" ({len(lm.people)} people {seen}, {pipe.choice.in_zone_count} in zone)"
        lines.append((f"person {where}", CYAN if s.in_zone else WHITE))
    t = pipe.tracker
    active = []
    if t.present.active and t.present.started_at:
        active.append(f"present {(res.frame.ts - t.present.started_at).total_seconds():.0f}s")
    if t.phone.active and t.phone.started_at:
        active.append(f"ON_PHONE {(res.frame.ts - t.phone.started_at).total_seconds():.0f}s")
    if t.looking.active:
        active.append(f"LOOKING_AROUND {t.glances.count()} glances")
    if t.gaze.active:
        active.append("GAZE_AWAY")
    lines.append((" | ".join(active) or "no behaviour", RED if len(active) > 1 else GREEN))
    y = int(22 * font / 0.5)
    for text, col in lines:
        cv2.putText(out, text, (8, y), cv2.FONT_HERSHEY_SIMPLEX, font, (0, 0, 0), thick + 2, cv2.LINE_AA)
        cv2.putText(out, text, (8, y), cv2.FONT_HERSHEY_SIMPLEX, font, col, thick, cv2.LINE_AA)
        y += int(20 * font / 0.5)
    return out


class Annotator:
    """Writes annotated frames to a video file (`--annotate OUT.mp4`) and/or shows them (`--show`).

    `--show` opens a window when OpenCV has a GUI and there is a display; otherwise (the headless
    OpenCV this project installs, a box without a screen) it serves them as an MJPEG stream on
    127.0.0.1:`show_port` (0 = a free port) and calls `announce(url)`. `pace=True` plays a file at
    its own rate (frame times), so a viewer sees it as a camera would have shown it.
    """

    def __init__(self, out: Path | None = None, *, show: bool = False, fps: float = 5.0, show_port: int = 0,
                 title: str = "atmguard", announce: Callable[[str], None] | None = None, pace: bool = False) -> None:
        self.out, self.show, self.fps = out, show, fps
        self.title, self.show_port, self.announce, self.pace = title, show_port, announce, pace
        self._writer: object | None = None
        self.window = show and gui_available()
        self.server: MjpegServer | None = None
        self._clock: tuple[float, datetime] | None = None
        if show and not self.window:
            self._serve()

    def _serve(self) -> None:
        self.server = MjpegServer(self.title, self.show_port)
        if self.announce is not None:
            self.announce(self.server.url)

    def __call__(self, res: FrameResult, pipe: CameraPipeline) -> None:
        # heavy: imported on first use, never at import (package docstring)
        import cv2

        img = draw(res.frame.image, res, pipe)
        if self.out is not None:
            if self._writer is None:
                self.out.parent.mkdir(parents=True, exist_ok=True)
                fourcc = cv2.VideoWriter.fourcc(*("mp4v" if self.out.suffix.lower() in (".mp4", ".m4v", ".mov") else "MJPG"))
                self._writer = cv2.VideoWriter(str(self.out), fourcc, self.fps, (img.shape[1], img.shape[0]))
            self._writer.write(img)  # type: ignore[attr-defined]
        if self.pace:
            self._wait_for(res.frame.ts)
        if self.window:
            try:
                cv2.imshow(f"atmguard: {self.title}", img)
                cv2.waitKey(1)
            except cv2.error:
                self.window = False  # a GUI build that cannot open a window here: stream instead
                self._serve()
        if self.server is not None:
            self.server.publish(img)

    def _wait_for(self, ts: datetime) -> None:
        """Sleep until `ts` (a frame time on the video's timeline) is due in wall time."""
        now = time.monotonic()
        if self._clock is None:
            self._clock = (now, ts)
            return
        due = self._clock[0] + (ts - self._clock[1]).total_seconds()
        if due > now:
            time.sleep(due - now)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()  # type: ignore[attr-defined]
            self._writer = None
        if self.server is not None:
            self.server.close()
            self.server = None
        if self.window:
            # heavy: imported on first use, never at import (package docstring)
            import cv2

            cv2.destroyAllWindows()
