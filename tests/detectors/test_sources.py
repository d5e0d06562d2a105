"""Sources: file timelines (GIF too), an HTTP stream that drops and comes back, newest frame wins."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator

import pytest

from atmguard.detectors.sources import LiveSource, VideoFileSource, open_source
from tests.detectors.conftest import T0, footage


def test_file_timestamps_follow_the_video_timeline_at_the_analysis_rate() -> None:
    src = VideoFileSource(footage("b_intel_headpose_female_turns.gif"), analysis_fps=5, start_time=T0)
    frames = list(src)
    offsets = [(f.ts - T0).total_seconds() for f in frames]
    assert offsets[0] == 0.0 and offsets == sorted(offsets)
    assert 1.5 < offsets[-1] < 1.9  # 23 frames at 12.5 fps
    assert len(frames) <= 1.84 * 5 + 1  # not above 5 per second on the video's own clock
    assert all(b - a > 0.08 for a, b in zip(offsets, offsets[1:], strict=False))
    assert src.stats.read == 23 and src.stats.dropped == 23 - len(frames)


def test_missing_file_is_a_clear_error() -> None:
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        open_source("/no/such/nope.mp4")


def _jpeg_frames(name: str, limit: int) -> list[bytes]:
    import cv2

    cap = cv2.VideoCapture(str(footage(name)))
    out: list = []
    while len(out) < limit:
        ok, img = cap.read()
        if not ok:
            break
        out.append(cv2.imencode(".jpg", img)[1].tobytes())
    cap.release()
    return out


@pytest.fixture
def mjpeg_camera() -> Iterator[tuple[str, dict[str, int]]]:
    """An IP camera's MJPEG-over-HTTP stream that drops the connection after 60 frames, every time."""
    frames = _jpeg_frames("d_hall_monitor_cctv_corridor.mp4", 60)
    served = {"connections": 0}

    class Camera(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # http.server's name
            served["connections"] += 1
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace;boundary=frame")
            self.end_headers()
            try:
                for jpg in frames:
                    self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                     + str(len(jpg)).encode() + b"\r\n\r\n" + jpg + b"\r\n")
                    time.sleep(0.005)
            except (BrokenPipeError, ConnectionResetError):
                pass
            self.close_connection = True  # the camera "drops" the stream

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Camera)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/video.mjpg", served
    server.shutdown()
    server.server_close()


def test_http_stream_reconnects_after_it_drops(mjpeg_camera: tuple[str, dict[str, int]]) -> None:
    url, served = mjpeg_camera
    src = LiveSource(url, analysis_fps=50, backoff_initial_s=0.05).start()
    try:
        deadline = time.monotonic() + 20
        while src.stats.reconnects < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert src.stats.reconnects >= 2 and served["connections"] >= 3  # dropped and opened again, twice
        assert src.stats.read > 60  # frames from more than one connection
        frame = src.latest(timeout=2)
        assert frame is not None and frame.image.shape[:2] == (144, 176)
    finally:
        src.close()


def test_unreachable_source_backs_off() -> None:
    src = LiveSource("/no/such/camera.mp4", backoff_initial_s=0.05, backoff_max_s=10).start()
    time.sleep(1.0)
    src.close()
    # retries at 0, .05, .15, .35, .75 s: a handful, not a busy loop
    assert 3 <= src.stats.failed_opens <= 7


def test_newest_frame_wins_with_a_slow_consumer() -> None:
    # a 30 fps "camera" read by a consumer that takes a frame every 0.3 s
    src = LiveSource(str(footage("c_akiyo_frontal.mp4")), analysis_fps=50, realtime_file=True).start()
    try:
        got = []
        for _ in range(5):
            time.sleep(0.3)
            frame = src.latest(timeout=1)
            assert frame is not None
            got.append((frame.index, time.monotonic() - frame.captured))
        indices = [i for i, _ in got]
        assert all(b - a >= 3 for a, b in zip(indices, indices[1:], strict=False))  # skipped ahead, no backlog
        assert all(age < 0.25 for _, age in got)  # what we get is fresh (a few frames at most, on a busy machine)
        assert src.stats.dropped >= 10
    finally:
        src.close()
