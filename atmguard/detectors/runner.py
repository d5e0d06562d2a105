"""Several cameras: one analysis loop per process over many cameras, and N processes for N cores.

Each camera has a reader thread (newest frame wins); the loop analyses each camera at its
`analysis_fps`. Facts from worker processes come back over a queue to the parent, which prints
or publishes them, so only one process talks to the broker.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import queue
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from atmguard.core.contracts import BehaviorFact
from atmguard.detectors.config import CameraConfig
from atmguard.detectors.pipeline import CameraPipeline
from atmguard.detectors.sources import LiveSource, is_stream

log = logging.getLogger(__name__)

Sink = Callable[[BehaviorFact], None]


def serve_cameras(cfgs: list[CameraConfig], emit: Callable[[BehaviorFact, float], None], *,
                  stop: Any, realtime_files: bool = True) -> None:
    """Analyse every camera at its rate until `stop` is set; `emit(fact, captured_monotonic)`."""
    cams: list[tuple[CameraConfig, LiveSource, CameraPipeline]] = []
    for cfg in cfgs:
        src = LiveSource(cfg.source, analysis_fps=cfg.analysis_fps, realtime_file=realtime_files and not is_stream(cfg.source))
        pipe = CameraPipeline(cfg)
        src._on_reconnect = pipe.metrics.stream_reconnects.labels(cfg.camera_id).inc
        cams.append((cfg, src.start(), pipe))
    due = [time.monotonic()] * len(cams)
    seen = [(0, 0)] * len(cams)
    try:
        while not stop.is_set():
            now = time.monotonic()
            for i, (cfg, src, pipe) in enumerate(cams):
                if now < due[i]:
                    continue
                due[i] = max(due[i] + 1.0 / cfg.analysis_fps, now)
                frame = src.latest(timeout=0)
                if frame is None:
                    continue
                res = pipe.process(frame)
                read, dropped = src.stats.read, src.stats.dropped
                pipe.metrics.frames_read.labels(cfg.camera_id).inc(read - seen[i][0])
                pipe.metrics.frames_dropped.labels(cfg.camera_id).inc(dropped - seen[i][1])
                seen[i] = (read, dropped)
                for fact in res.facts:
                    emit(fact, frame.captured)
            wait = min(due) - time.monotonic()
            if wait > 0:
                stop.wait(wait)
    finally:
        for cfg, src, pipe in cams:
            src.close()
            for fact in pipe.finish():
                emit(fact, time.monotonic())
            pipe.close()
            log.info("camera %s stopped", cfg.camera_id)


def _worker(cfgs_json: list[str], out: Any, stop: Any) -> None:
    # Ctrl-C goes to the whole process group: the parent alone decides, through `stop`, so every
    # worker still ends its cameras' behaviours (ended=true facts) before it exits
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cfgs = [CameraConfig.model_validate_json(c) for c in cfgs_json]

    def emit(fact: BehaviorFact, captured: float) -> None:
        out.put((fact.to_json(), captured))

    serve_cameras(cfgs, emit, stop=stop)


def split(cfgs: list[CameraConfig], n: int) -> list[list[CameraConfig]]:
    """Cameras dealt round-robin over n processes."""
    return [cfgs[i::n] for i in range(n) if cfgs[i::n]]


def run_cameras(cfgs: list[CameraConfig], sink: Sink, *, processes: int = 1, stop: Any = None,
                on_lag: Callable[[float], None] | None = None) -> None:
    """Run cameras in this process (processes=1) or spread over worker processes; blocks until `stop`."""
    stop = stop or threading.Event()
    if processes <= 1:
        def emit(fact: BehaviorFact, captured: float) -> None:
            sink(fact)
            if on_lag:
                on_lag(time.monotonic() - captured)

        serve_cameras(cfgs, emit, stop=stop)
        return
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    mp_stop = ctx.Event()
    procs = [ctx.Process(target=_worker, args=([c.model_dump_json() for c in part], out, mp_stop), daemon=True)
             for part in split(cfgs, processes)]
    for p in procs:
        p.start()
    try:
        while True:
            try:
                text, captured = out.get(timeout=0.2)
            except queue.Empty:
                if stop.is_set() or not any(p.is_alive() for p in procs):
                    break
                continue
            fact = BehaviorFact.model_validate_json(text)
            sink(fact)
            if on_lag:
                on_lag(time.monotonic() - captured)  # CLOCK_MONOTONIC is system-wide on Linux
    finally:
        mp_stop.set()
        deadline = time.monotonic() + 10
        while any(p.is_alive() for p in procs) and time.monotonic() < deadline:
            try:
                text, _ = out.get(timeout=0.2)
                sink(BehaviorFact.model_validate_json(text))
            except queue.Empty:
                pass
        for p in procs:
            p.join(timeout=1)
            if p.is_alive():
                p.terminate()
