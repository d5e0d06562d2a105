"""`atmguard bench detectors`: the detector's own cost against MediaPipe's, gating, lag, scaling.

Frames are decoded before timing starts ("decoding aside"): real footage, looped. Cameras are
simulated at 25 fps with newest-frame-wins; each is analysed at `fps`. Figures are ratios
against a baseline measured in the same run (inference time; a busy camera; one process).
"""

from __future__ import annotations

import io
import json
import multiprocessing as mp
import os
import statistics
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from atmguard.core.settings import Settings
from atmguard.detectors.config import CameraConfig
from atmguard.detectors.pipeline import CameraPipeline
from atmguard.detectors.publish import StdoutSink
from atmguard.detectors.sources import Frame

BUSY = ["a_suzie_landline_phone_at_ear.mp4", "c_akiyo_frontal.mp4", "c_intel_frontal_male.gif",
        "b_intel_headpose_female_turns.gif", "c_intel_asl_thanks_hand_at_chin.mkv"]
IDLE = "d_intel_standing_table_rear_overhead.mp4"  # its first 7 s: an empty room, real sensor/codec noise
CAMERA_FPS = 25.0
DEFAULT_PEOPLE: int = CameraConfig.model_fields["max_people"].default  # what a camera gets unless configured
T0 = datetime(2026, 2, 14, 10, 0, tzinfo=UTC)


def default_footage() -> Path:
    """The footage folder from the settings (ATMGUARD_FOOTAGE, default ../shared/footage beside the checkout)."""
    return Settings().footage


def _decode(path: Path, limit: int, min_width: int = 640) -> list[np.ndarray]:
    import cv2

    cap = cv2.VideoCapture(str(path))
    out: list[np.ndarray] = []
    while len(out) < limit:
        ok, img = cap.read()
        if not ok:
            break
        out.append(img)
    cap.release()
    return out


@dataclass
class SimCamera:
    """A camera made of decoded frames; the newest frame at time t is frames[t * 25 fps]."""

    name: str
    frames: list[np.ndarray]
    pipe: CameraPipeline

    def frame_at(self, t0: float, now: float, offset_s: float = 0.0) -> Frame:
        k = int((now - t0) * CAMERA_FPS)
        captured = t0 + k / CAMERA_FPS
        return Frame(self.frames[k % len(self.frames)], T0 + timedelta(seconds=offset_s + now - t0), k, captured)


WARMUP_S = 6.0


def _warm_up(cams: list[SimCamera], fps: float) -> None:
    """Steady state first: models loaded, idle cameras past their start-up analysis and background learning."""
    for k in range(int(WARMUP_S * fps)):
        for cam in cams:
            img = cam.frames[int(k / fps * CAMERA_FPS) % len(cam.frames)]
            cam.pipe.process(Frame(img, T0 + timedelta(seconds=k / fps), k, time.monotonic()))


def _cameras(footage: Path, busy: int, idle: int, fps: float, max_people: int = DEFAULT_PEOPLE) -> list[SimCamera]:
    cams: list[SimCamera] = []
    for i in range(busy):
        name = BUSY[i % len(BUSY)]
        cfg = CameraConfig(camera_id=f"busy-{i}", atm_id=f"atm-bench-{i:03d}", analysis_fps=fps, max_people=max_people)
        cams.append(SimCamera(name, _decode(footage / name, 150), CameraPipeline(cfg)))
    if idle:
        empty = _decode(footage / IDLE, 45)  # 0 .. 4.5 s: nobody there yet
    for j in range(idle):
        cfg = CameraConfig(camera_id=f"idle-{j}", atm_id=f"atm-bench-{busy + j:03d}", analysis_fps=fps,
                           max_people=max_people)
        cams.append(SimCamera(IDLE, empty, CameraPipeline(cfg)))
    return cams


def _close(cams: list[SimCamera]) -> None:
    for c in cams:
        c.pipe.close()


def overhead(footage: Path, frames_per_camera: int = 40, max_people: int = DEFAULT_PEOPLE) -> dict[str, float]:
    """Busy cameras flat out: CPU inside the models vs the detector's own work (incl. JSON encoding, output).

    CPU time (not wall time) so other load on a shared machine does not blur the ratio.
    """
    cams = _cameras(footage, 5, 0, fps=5.0, max_people=max_people)
    sink = StdoutSink(jsonl=True, stream=io.StringIO())
    model_cpu = own_cpu = model_wall = 0.0
    n = facts = 0
    try:
        for k in range(frames_per_camera):
            for cam in cams:
                img = cam.frames[(k * 5) % len(cam.frames)]
                frame = Frame(img, T0 + timedelta(seconds=k / 5.0), k, time.monotonic())
                res = cam.pipe.process(frame)
                c = time.process_time()
                for f in res.facts:
                    sink(f)
                own_cpu += res.own_cpu_s + (time.process_time() - c)
                model_cpu += res.model_cpu_s
                model_wall += res.model_s
                n += 1
                facts += len(res.facts)
    finally:
        _close(cams)
    return {"frames": n, "facts": facts, "model_cpu_ms_per_frame": 1000 * model_cpu / n,
            "model_wall_ms_per_frame": 1000 * model_wall / n,
            "own_cpu_ms_per_frame": 1000 * own_cpu / n, "own_over_model": own_cpu / model_cpu}


def cost_per_camera_second(footage: Path, fps: float, timeline_s: float = 30.0, max_people: int = DEFAULT_PEOPLE) -> dict[str, float]:
    """CPU one camera needs per second of its own timeline at `fps`: a busy camera vs an idle one.

    Measured flat out along the camera's timeline (frame times step by 1/fps), so the answer
    does not depend on how loaded the machine is while measuring; idle includes the periodic rechecks.
    """
    out: dict[str, float] = {}
    for kind, n_busy, n_idle in (("busy", 1, 0), ("idle", 0, 1)):
        cams = _cameras(footage, n_busy, n_idle, fps, max_people)
        cam = cams[0]
        _warm_up(cams, fps)
        n = int(timeline_s * fps)
        c = time.process_time()
        ran = 0
        for k in range(n):
            img = cam.frames[int(k / fps * CAMERA_FPS) % len(cam.frames)]
            res = cam.pipe.process(Frame(img, T0 + timedelta(seconds=WARMUP_S + k / fps), k, time.monotonic()))
            ran += res.analysed
        cpu = time.process_time() - c
        _close(cams)
        out[f"{kind}_cpu_ms_per_camera_second"] = 1000 * cpu / timeline_s
        out[f"{kind}_models_ran_share"] = ran / n
    out["idle_over_busy"] = out["idle_cpu_ms_per_camera_second"] / out["busy_cpu_ms_per_camera_second"]
    busy_s, idle_s = out["busy_cpu_ms_per_camera_second"] / 1000, out["idle_cpu_ms_per_camera_second"] / 1000
    out["core_share_5_busy"] = 5 * busy_s
    out["core_share_25_fifth_busy"] = 5 * busy_s + 20 * idle_s
    return out


def paced(footage: Path, busy: int, idle: int, fps: float, seconds: float, max_people: int = DEFAULT_PEOPLE) -> dict[str, float]:
    """Real-time run on ONE core: each camera analysed at `fps`; measures achieved rate, CPU share, lag."""
    cams = _cameras(footage, busy, idle, fps, max_people)
    _warm_up(cams, fps)
    sink = StdoutSink(jsonl=True, stream=io.StringIO())
    period = 1.0 / fps
    n = len(cams)
    start = time.monotonic() + 0.2
    due = [start + i * period / n for i in range(n)]
    analysed = [0] * n
    ran_models = [0] * n
    lags: list[float] = []
    fact_lags: list[float] = []
    busy_ms: list[float] = []
    idle_ms: list[float] = []
    cpu0 = time.process_time()
    try:
        while True:
            i = min(range(n), key=due.__getitem__)
            wait = due[i] - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            now = time.monotonic()
            if now - start >= seconds:
                break
            cam = cams[i]
            frame = cam.frame_at(start, now, WARMUP_S)
            c = time.process_time()
            res = cam.pipe.process(frame)
            for f in res.facts:
                sink(f)
                fact_lags.append(time.monotonic() - frame.captured)
            (busy_ms if cam.name != IDLE else idle_ms).append(1000 * (time.process_time() - c))
            lags.append(time.monotonic() - frame.captured)
            analysed[i] += 1
            ran_models[i] += res.analysed
            due[i] += period
            if due[i] < time.monotonic() - period:  # fallen behind: newest frame wins, no backlog
                due[i] = time.monotonic()
        wall = time.monotonic() - start
        cpu = time.process_time() - cpu0
    finally:
        _close(cams)
    lag_sorted = sorted(lags)
    out = {
        "cameras": n, "busy": busy, "target_fps": fps, "seconds": round(wall, 1),
        "achieved_fps_per_camera": sum(analysed) / n / wall,
        "min_camera_fps": min(analysed) / wall,
        "core_busy_share": cpu / wall,
        "lag_p50_ms": 1000 * statistics.median(lags), "lag_p95_ms": 1000 * lag_sorted[int(0.95 * (len(lags) - 1))],
        "lag_max_ms": 1000 * lag_sorted[-1],
        "facts": len(fact_lags),
        "fact_lag_p95_ms": 1000 * sorted(fact_lags)[int(0.95 * (len(fact_lags) - 1))] if fact_lags else float("nan"),
        "fact_lag_max_ms": 1000 * max(fact_lags) if fact_lags else float("nan"),
        "busy_camera_ms_per_frame": statistics.mean(busy_ms) if busy_ms else 0.0,
    }
    # what one core could carry at this rate, from the CPU each camera used per analysed frame
    per_s = (sum(busy_ms) + sum(idle_ms)) / 1000 / max(1, len(busy_ms) + len(idle_ms)) * fps * n
    out["core_needed_share"] = per_s
    if idle_ms:
        out["idle_camera_ms_per_frame"] = statistics.mean(idle_ms)
        out["idle_over_busy"] = out["idle_camera_ms_per_frame"] / out["busy_camera_ms_per_frame"]
        out["idle_models_ran_share"] = sum(ran_models[busy:]) / max(1, sum(analysed[busy:]))
    return out


def _flat_out(footage: str, seconds: float, start_at: float, out: Any, max_people: int = DEFAULT_PEOPLE) -> None:
    cams = _cameras(Path(footage), 5, 0, 5.0, max_people)
    k = n = 0
    while time.time() < start_at:
        time.sleep(0.01)
    end = time.time() + seconds
    while time.time() < end:
        for cam in cams:
            img = cam.frames[(k * 5) % len(cam.frames)]
            cam.pipe.process(Frame(img, T0 + timedelta(seconds=k / 5.0), k, time.monotonic()))
            n += 1
        k += 1
    _close(cams)
    out.put(n / seconds)


def scaling(footage: Path, seconds: float, max_people: int = DEFAULT_PEOPLE) -> dict[str, float]:
    """Frames/s flat out: one process vs two processes at once (each over 5 busy cameras)."""
    ctx = mp.get_context("spawn")
    results: dict[str, float] = {}
    for procs in (1, 2):
        q = ctx.Queue()
        start_at = time.time() + 8.0  # after imports and model loading in every process
        ps = [ctx.Process(target=_flat_out, args=(str(footage), seconds, start_at, q, max_people)) for _ in range(procs)]
        for p in ps:
            p.start()
        rates = [q.get(timeout=seconds + 120) for _ in ps]
        for p in ps:
            p.join(timeout=30)
        results[f"fps_{procs}_process"] = sum(rates)
    results["speedup_2_over_1"] = results["fps_2_process"] / results["fps_1_process"]
    return results


def run_bench(*, seconds: float = 12.0, fps: float = 5.0, json_out: Path | None = None,
              footage: Path | None = None, max_people: int | None = None) -> dict[str, Any]:
    """Run everything and print a Markdown summary (`max_people`: every camera's; None = the cameras' default)."""
    max_people = DEFAULT_PEOPLE if max_people is None else max_people
    footage = footage or default_footage()
    if not (footage / BUSY[0]).exists():
        raise SystemExit(f"footage not found in {footage} (use --footage)")
    report: dict[str, Any] = {"load_average_at_start": os.getloadavg(), "max_people": max_people}
    report["overhead"] = overhead(footage, max_people=max_people)
    report["camera_cost"] = cost_per_camera_second(footage, fps, max_people=max_people)
    all_cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(all_cpus)})  # one core, MediaPipe's threads included
    try:
        report["five_busy_one_core"] = paced(footage, 5, 0, fps, seconds, max_people)
        report["twentyfive_fifth_busy_one_core"] = paced(footage, 5, 20, fps, seconds, max_people)
    finally:
        os.sched_setaffinity(0, all_cpus)
    report["scaling"] = scaling(footage, seconds=min(seconds, 10.0), max_people=max_people)
    report["load_average_at_end"] = os.getloadavg()
    scan = CameraConfig.model_fields["scan_every_s"].default
    o, a, b, s = report["overhead"], report["five_busy_one_core"], report["twentyfive_fifth_busy_one_core"], report["scaling"]
    cc = report["camera_cost"]
    lines = [
        "| measure | value |", "|---|---|",
        f"| inference CPU ({'single-person' if max_people == 1 else f'multi-person (max_people {max_people}: scan {scan:g} s, tracked between)'} pose + face mesh + hands when needed), ms/frame (wall {o['model_wall_ms_per_frame']:.1f}) | {o['model_cpu_ms_per_frame']:.1f} |",
        f"| detector's own work CPU (gate, resize, geometry, temporal, JSON, output), ms/frame | {o['own_cpu_ms_per_frame']:.2f} |",
        f"| **own work / inference** (target <= 10%) | **{100 * o['own_over_model']:.1f}%** |",
        f"| CPU per camera-second at {fps:g} fps: busy / idle (idle = gate + rechecks) | {cc['busy_cpu_ms_per_camera_second']:.0f} ms / {cc['idle_cpu_ms_per_camera_second']:.1f} ms |",
        f"| **idle camera / busy camera** (models ran on {100 * cc['idle_models_ran_share']:.1f}% of idle frames) | **{100 * cc['idle_over_busy']:.1f}%** |",
        f"| one core needed for 5 busy cameras / for 25 cameras with 5 busy (from the above) | {100 * cc['core_share_5_busy']:.0f}% / {100 * cc['core_share_25_fifth_busy']:.0f}% |",
        f"| 5 busy cameras, 1 core: achieved fps per camera (target {fps:g}) | {a['achieved_fps_per_camera']:.2f} (min {a['min_camera_fps']:.2f}) |",
        f"| 5 busy cameras, 1 core: core busy / CPU needed for the full 5 fps | {100 * a['core_busy_share']:.0f}% / {100 * a['core_needed_share']:.0f}% |",
        f"| 5 busy cameras: frame->result lag p50 / p95 / max, ms | {a['lag_p50_ms']:.0f} / {a['lag_p95_ms']:.0f} / {a['lag_max_ms']:.0f} |",
        f"| 5 busy cameras: frame->fact lag p95 / max, ms ({a['facts']} facts) | {a['fact_lag_p95_ms']:.0f} / {a['fact_lag_max_ms']:.0f} |",
        f"| 25 cameras (5 busy), 1 core: achieved fps per camera | {b['achieved_fps_per_camera']:.2f} (min {b['min_camera_fps']:.2f}) |",
        f"| 25 cameras (5 busy), 1 core: core busy / CPU needed for the full 5 fps | {100 * b['core_busy_share']:.0f}% / {100 * b['core_needed_share']:.0f}% |",
        f"| 25 cameras: frame->fact lag p95 / max, ms ({b['facts']} facts) | {b['fact_lag_p95_ms']:.0f} / {b['fact_lag_max_ms']:.0f} |",
        f"| flat out, 1 process / 2 processes, frames/s | {s['fps_1_process']:.1f} / {s['fps_2_process']:.1f} |",
        f"| **scaling 2 processes / 1** | **{s['speedup_2_over_1']:.2f}x** |",
        f"| load average (1 min) at start / end (shared machine) | {report['load_average_at_start'][0]:.2f} / {report['load_average_at_end'][0]:.2f} |",
    ]
    print("\n".join(lines))
    if json_out is not None:
        json_out.write_text(json.dumps(report, indent=2, default=float))
    return report
