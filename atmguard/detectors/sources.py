"""Video sources through OpenCV: files (any container OpenCV reads, GIF included), RTSP/HTTP streams, devices.

A file is analysed as fast as the machine allows, at the configured analysis rate along the
video's own timeline. A live stream is read at the camera's rate by a reader thread that keeps
only the newest frame ("newest frame wins"), so a slow model never builds a backlog; when the
stream drops, the reader reconnects with exponential backoff.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import numpy as np

log = logging.getLogger(__name__)


@dataclass
class Frame:
    """One decoded frame: BGR pixels, its event time, and when it was captured (monotonic, for lag)."""

    image: np.ndarray
    ts: datetime
    index: int
    captured: float


class FrameSource(Protocol):
    """What the pipeline reads from."""

    name: str

    def __iter__(self) -> Iterator[Frame]: ...

    def close(self) -> None: ...


@dataclass
class SourceStats:
    """Counters a source keeps; the pipeline turns them into Prometheus metrics."""

    read: int = 0
    dropped: int = 0
    reconnects: int = 0
    failed_opens: int = 0


def is_stream(source: str) -> bool:
    return source.split("://", 1)[0].lower() in ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp") and "://" in source


def _device(source: str) -> int | None:
    return int(source) if source.strip().isdigit() else None


class VideoFileSource:
    """A video file (or image) read in order; frames picked at `analysis_fps` on the video's timeline."""

    def __init__(self, path: str | Path, *, analysis_fps: float | None = 5.0, start_time: datetime | None = None,
                 max_seconds: float | None = None) -> None:
        # heavy: imported on first use, never at import (package docstring)
        import cv2

        self.path = Path(path)
        self.name = str(path)
        if not self.path.exists():
            raise FileNotFoundError(f"video not found: {self.path}")
        self._cap = cv2.VideoCapture(str(self.path))
        if not self._cap.isOpened():
            raise ValueError(f"OpenCV cannot read {self.path} as video")
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if 0 < fps < 1000 else 25.0
        self.analysis_fps = analysis_fps
        self.start_time = start_time or datetime.now(UTC)
        self.max_seconds = max_seconds
        self.stats = SourceStats()

    def __iter__(self) -> Iterator[Frame]:
        # heavy: imported on first use, never at import (package docstring)
        import cv2

        next_t = 0.0
        step = 1.0 / self.analysis_fps if self.analysis_fps else 0.0
        i = 0
        while True:
            if not self._cap.grab():
                break
            # the frame's own time: the container's timestamp, else index / fps
            pos_ms = float(self._cap.get(cv2.CAP_PROP_POS_MSEC) or 0.0)
            t = pos_ms / 1000.0 if pos_ms > 0 else i / self.fps
            i += 1
            self.stats.read += 1
            if self.max_seconds is not None and t > self.max_seconds:
                break
            if t + 1e-6 < next_t:
                self.stats.dropped += 1  # grabbed but never converted to pixels: skipped frames cost little
                continue
            ok, image = self._cap.retrieve()
            if not ok or image is None:
                break
            next_t = max(next_t + step, t + 1e-6) if step else t
            yield Frame(image=image, ts=self.start_time + timedelta(seconds=t), index=i - 1, captured=time.monotonic())

    def close(self) -> None:
        self._cap.release()


class LiveSource:
    """An RTSP/HTTP stream or device: a reader thread at the camera's rate, newest frame wins, reconnects.

    `opener` makes the cv2.VideoCapture-like object (a seam for tests); `realtime_file=True` plays a
    file at its own frame rate as if it were a camera (for benchmarks and tests).
    """

    def __init__(self, source: str, *, analysis_fps: float = 5.0, backoff_initial_s: float = 0.5,
                 backoff_max_s: float = 30.0, opener: Callable[[str], Any] | None = None,
                 realtime_file: bool = False, on_reconnect: Callable[[], None] | None = None) -> None:
        self.source = source
        self.name = source
        self.analysis_fps = analysis_fps
        self.backoff_initial_s, self.backoff_max_s = backoff_initial_s, backoff_max_s
        self._opener = opener or self._open_cv
        self._realtime_file = realtime_file
        self._on_reconnect = on_reconnect
        self.stats = SourceStats()
        self._lock = threading.Condition()
        self._latest: Frame | None = None
        self._delivered = -1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._reader, name=f"reader-{source}", daemon=True)
        self._started = False
        self.connected = False

    @staticmethod
    def _open_cv(source: str) -> Any:
        # heavy: imported on first use, never at import (package docstring)
        import cv2

        dev = _device(source)
        cap = cv2.VideoCapture(dev) if dev is not None else cv2.VideoCapture(source)
        if dev is None and is_stream(source):
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # keep the decoder's own queue short
        return cap

    def start(self) -> LiveSource:
        if not self._started:
            self._started = True
            self._thread.start()
        return self

    def _reader(self) -> None:
        backoff = self.backoff_initial_s
        index = 0
        first = True
        while not self._stop.is_set():
            cap = self._opener(self.source)
            if not cap.isOpened():
                cap.release()
                self.stats.failed_opens += 1
                log.warning("cannot open %s; retrying in %.1fs", self.source, backoff)
                self._stop.wait(backoff)
                backoff = min(self.backoff_max_s, backoff * 2)
                continue
            if not first:
                self.stats.reconnects += 1
                if self._on_reconnect:
                    self._on_reconnect()
            first = False
            self.connected = True
            fps = 0.0
            try:
                fps = float(cap.get(5) or 0.0)  # CAP_PROP_FPS
            except Exception:  # noqa: BLE001 - a fake or odd backend may not know it
                fps = 0.0
            period = 1.0 / fps if self._realtime_file and 0 < fps < 1000 else 0.0
            next_at = time.monotonic()
            got_any = False
            while not self._stop.is_set():
                ok, image = cap.read()
                if not ok or image is None:
                    break
                got_any = True
                backoff = self.backoff_initial_s
                frame = Frame(image=image, ts=datetime.now(UTC), index=index, captured=time.monotonic())
                index += 1
                with self._lock:
                    if self._latest is not None and self._latest.index != self._delivered:
                        self.stats.dropped += 1  # newest frame wins: the unanalysed one is dropped
                    self._latest = frame
                    self.stats.read += 1
                    self._lock.notify_all()
                if period:
                    next_at += period
                    self._stop.wait(max(0.0, next_at - time.monotonic()))
            cap.release()
            self.connected = False
            if self._stop.is_set():
                break
            log.warning("stream %s dropped; reconnecting in %.1fs", self.source, backoff)
            self._stop.wait(backoff)
            if not got_any:
                backoff = min(self.backoff_max_s, backoff * 2)

    def latest(self, timeout: float | None = None) -> Frame | None:
        """The newest frame not yet handed out, waiting up to `timeout` for one."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self._latest is None or self._latest.index == self._delivered:
                remaining = None if deadline is None else deadline - time.monotonic()
                if (remaining is not None and remaining <= 0) or self._stop.is_set():
                    return None
                self._lock.wait(remaining if remaining is not None else 0.5)
            self._delivered = self._latest.index
            return self._latest

    def __iter__(self) -> Iterator[Frame]:
        self.start()
        period = 1.0 / self.analysis_fps
        next_at = time.monotonic()
        while not self._stop.is_set():
            frame = self.latest(timeout=1.0)
            if frame is None:
                continue
            yield frame
            next_at += period
            delay = next_at - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            else:
                next_at = time.monotonic()

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            self._lock.notify_all()
        if self._started:
            self._thread.join(timeout=5)


def open_source(source: str | Path, *, analysis_fps: float = 5.0, start_time: datetime | None = None,
                realtime: bool = False) -> VideoFileSource | LiveSource:
    """A file path -> VideoFileSource (or LiveSource played at its rate if `realtime`); URL/device -> LiveSource."""
    text = str(source)
    if is_stream(text) or _device(text) is not None:
        return LiveSource(text, analysis_fps=analysis_fps)
    if realtime:
        if not Path(text).exists():
            raise FileNotFoundError(f"video not found: {text}")
        return LiveSource(text, analysis_fps=analysis_fps, realtime_file=True)
    return VideoFileSource(text, analysis_fps=analysis_fps, start_time=start_time)
