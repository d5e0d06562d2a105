"""`atmguard detect --show`: the annotated frames in a window, or, on a headless box, as an MJPEG stream.

Detectors run on boxes next to the cameras, usually without a screen, and the project installs
the headless OpenCV. There `--show` serves the annotated frames over HTTP on 127.0.0.1 (an index
page with the stream in an <img>, `/stream.mjpg`, and `/frame.jpg` for the newest frame alone);
from a laptop, `ssh -L PORT:127.0.0.1:PORT box` reaches it. Loopback only: the frames show
customers' faces. A frame is JPEG-encoded only when someone is watching, once however many are.
"""

from __future__ import annotations

import os
import sys
import threading
from html import escape
from http.server import BaseHTTPRequestHandler
from typing import ClassVar

import numpy as np

from atmguard.core.local_http import ThreadedServer

BOUNDARY = "atmguard-frame"
HOST = "127.0.0.1"


def gui_available() -> bool:
    """OpenCV was built with a GUI backend and (on Linux and BSD) there is a display to open a window on."""
    # heavy: imported on first use, never at import (package docstring)
    import cv2

    gui = [line.split(":", 1)[1].strip() for line in cv2.getBuildInformation().splitlines()
           if line.strip().startswith("GUI:")]
    if not gui or gui[0].upper() == "NONE":
        return False
    if sys.platform.startswith(("linux", "freebsd", "openbsd")):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


class FrameHub:
    """The newest annotated frame, JPEG-encoded lazily (once per frame, only when asked for)."""

    def __init__(self, quality: int = 80) -> None:
        self.quality = quality
        self._cond = threading.Condition()
        self._image: np.ndarray | None = None
        self._seq = 0
        self._jpeg: tuple[int, bytes] | None = None
        self.closed = False

    def publish(self, image: np.ndarray) -> None:
        with self._cond:
            self._image, self._seq = image, self._seq + 1
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def latest(self, after: int = 0, timeout: float = 1.0) -> tuple[int, bytes] | None:
        """(sequence number, JPEG) of a frame newer than `after`; None on timeout or once closed."""
        # heavy: imported on first use, never at import (package docstring)
        import cv2

        with self._cond:
            if not self._cond.wait_for(lambda: self.closed or self._seq > after, timeout):
                return None
            if self.closed and self._seq <= after:
                return None
            if self._jpeg is None or self._jpeg[0] != self._seq:
                assert self._image is not None
                ok, buf = cv2.imencode(".jpg", self._image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
                if not ok:
                    return None
                self._jpeg = (self._seq, buf.tobytes())
            return self._jpeg


def _index_html(title: str) -> bytes:
    t = escape(title)
    return (f"<!doctype html><html><head><meta charset=utf-8><title>atmguard: {t}</title>"
            "<style>body{margin:0;background:#111;color:#ddd;font:14px sans-serif}"
            "img{display:block;max-width:100vw;max-height:calc(100vh - 2em);margin:auto}"
            "p{margin:.4em;text-align:center}</style></head>"
            f"<body><p>atmguard detectors: {t}</p><img src=\"stream.mjpg\" alt=\"annotated frames of {t}\"></body></html>"
            ).encode()


class _Handler(BaseHTTPRequestHandler):
    hub: ClassVar[FrameHub]
    title: ClassVar[str]

    def log_message(self, format: str, *args: object) -> None:  # `format`: the base class's name
        pass  # stderr belongs to the detector's own messages

    def _send(self, code: int, ctype: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # http.server's naming
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            self._send(200, "text/html; charset=utf-8", _index_html(self.title))
        elif path == "/frame.jpg":
            got = self.hub.latest(after=0, timeout=5.0)
            if got is None:
                self._send(503, "text/plain", b"no frame yet\n")
            else:
                self._send(200, "image/jpeg", got[1])
        elif path == "/stream.mjpg":
            self._stream()
        else:
            self._send(404, "text/plain", b"not found: try / or /stream.mjpg\n")

    def _stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        seen = 0
        try:
            while not self.hub.closed:
                got = self.hub.latest(after=seen, timeout=1.0)
                if got is None:
                    continue
                seen, jpeg = got
                self.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
                                 .encode() + jpeg + b"\r\n")
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the viewer went away


class MjpegServer:
    """Serves a FrameHub on 127.0.0.1:port (0 = a free port) until `close()`."""

    def __init__(self, title: str, port: int = 0, quality: int = 80) -> None:
        self.hub = FrameHub(quality)
        handler = type("ShowHandler", (_Handler,), {"hub": self.hub, "title": title})
        self._server = ThreadedServer(HOST, port, handler, name="atmguard-show")
        self.port = self._server.port
        self.url = f"http://{HOST}:{self.port}/"

    def publish(self, image: np.ndarray) -> None:
        self.hub.publish(image)

    def close(self) -> None:
        self.hub.close()
        self._server.stop()
