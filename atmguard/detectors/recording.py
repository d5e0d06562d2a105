"""Record landmark sequences from real footage into small .npz files, and load them back.

The temporal logic is tested on these (looped to make long calls) where the clips are too
short: real landmarks, never hand-invented numbers.

    python -m atmguard.detectors.recording VIDEO OUT.npz [--fps 5] [--seconds 10]
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from atmguard.detectors.config import CameraConfig
from atmguard.detectors.geometry import Landmarks
from atmguard.detectors.pipeline import CameraPipeline
from atmguard.detectors.sources import VideoFileSource


def record(video: str | Path, out: str | Path, *, fps: float = 5.0, seconds: float | None = None) -> int:
    """Run the real models on `video` and save per-frame landmarks (pose, face, hands); returns frames."""
    cfg = CameraConfig(camera_id="rec", atm_id="rec", analysis_fps=fps)
    src = VideoFileSource(video, analysis_fps=fps, start_time=datetime(2026, 1, 1, tzinfo=UTC), max_seconds=seconds)
    pipe = CameraPipeline(cfg)
    t, pose, face, hands, size = [], [], [], [], None
    nan_pose, nan_face = np.full((33, 4), np.nan, np.float32), np.full((478, 2), np.nan, np.float32)
    try:
        for frame in src:
            lm, _sig, _scale = pipe.analyse(frame.image)
            size = (lm.width, lm.height)
            t.append((frame.ts - src.start_time).total_seconds())
            pose.append(nan_pose if lm.pose is None else lm.pose.astype(np.float32))
            face.append(nan_face if lm.face is None or len(lm.face) != 478 else lm.face.astype(np.float32))
            hs = np.full((2, 21, 2), np.nan, np.float32)
            for i, h in enumerate(lm.hands[:2]):
                hs[i] = h
            hands.append(hs)
    finally:
        src.close()
        pipe.close()
    np.savez_compressed(out, t=np.array(t, np.float32), pose=np.array(pose), face=np.array(face),
                        hands=np.array(hands), size=np.array(size or (0, 0)), source=str(Path(video).name))
    return len(t)


def load(path: str | Path) -> list[tuple[float, Landmarks]]:
    """(seconds from the clip's start, Landmarks) per recorded frame."""
    data = np.load(path)
    w, h = (int(v) for v in data["size"])
    out: list[tuple[float, Landmarks]] = []
    for i, t in enumerate(data["t"]):
        pose = data["pose"][i].astype(np.float64)
        face = data["face"][i].astype(np.float64)
        hands = [hd.astype(np.float64) for hd in data["hands"][i] if not np.isnan(hd).any()]
        out.append((float(t), Landmarks(width=w, height=h, pose=None if np.isnan(pose).any() else pose,
                                        face=None if np.isnan(face).any() else face, hands=hands)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("video")
    ap.add_argument("out")
    ap.add_argument("--fps", type=float, default=5.0)
    ap.add_argument("--seconds", type=float, default=None)
    a = ap.parse_args()
    print(record(a.video, a.out, fps=a.fps, seconds=a.seconds), "frames ->", a.out)


if __name__ == "__main__":
    main()
