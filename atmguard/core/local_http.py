"""A small HTTP server in a daemon thread, for local peers: the Twilio sink and the demo's CAD receiver."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ThreadedServer:
    """Serve `handler` on host:port (0 = a free port) until `stop()`.

    `owner`: the object the handler answers for, set as its class attribute `owner` (on a
    subclass made here), since http.server makes one handler instance per request.
    """

    def __init__(self, host: str, port: int, handler: type[BaseHTTPRequestHandler], name: str, *,
                 owner: object = None) -> None:
        if owner is not None:
            handler = type(handler.__name__, (handler,), {"owner": owner})
        self.server = ThreadingHTTPServer((host, port), handler)
        self.server.daemon_threads = True
        self.port: int = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name=name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving, close the socket and join the thread."""
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)
