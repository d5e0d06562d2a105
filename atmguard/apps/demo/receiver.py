"""A local computer-aided-dispatch receiver for `atmguard demo`: it checks each webhook's signature.

It does what a CAD integrator's endpoint does with atmguard's signed JSON POSTs (see
atmguard.notifier.webhook): recompute HMAC-SHA256(secret, TIMESTAMP + "." + RAW_BODY), compare it
with X-Atmguard-Signature, refuse a bad or stale one with 401. Runs in a thread on a free port.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

from atmguard.core.local_http import ThreadedServer
from atmguard.notifier.webhook import verify


@dataclass(frozen=True)
class Received:
    """One POST the receiver got: which webhook, whether its signature held, and the JSON."""

    name: str
    verified: bool
    intervention_id: str | None
    short_code: str | None
    rule: str | None
    payload: dict[str, Any]


class CadReceiver:
    """Signed-webhook receiver: POST /<name> with the secret of webhook <name>."""

    def __init__(self, secrets: dict[str, str], host: str = "127.0.0.1", port: int = 0) -> None:
        self.secrets = dict(secrets)
        self.host = host
        self.port = port
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._server: ThreadedServer | None = None

    def url(self, name: str) -> str:
        return f"http://{self.host}:{self.port}/{name}"

    def start(self) -> CadReceiver:
        self._server = ThreadedServer(self.host, self.port, _Handler, "demo-cad", owner=self)
        self.port = self._server.port
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.received)

    def take(self, name: str, headers: Any, body: bytes) -> int:
        """Check and record one POST; the HTTP status to answer."""
        secret = self.secrets.get(name)
        if secret is None:
            return 404
        ok = verify(secret, headers.get("X-Atmguard-Timestamp", ""), body, headers.get("X-Atmguard-Signature", ""))
        try:
            doc = json.loads(body)
        except ValueError:
            doc = {}
        doc = doc if isinstance(doc, dict) else {}
        found = doc.get("intervention")
        iv: dict[str, Any] = found if isinstance(found, dict) else {}
        with self._lock:
            self.received.append(Received(name, ok, iv.get("id"), doc.get("short_code"), iv.get("rule"), doc))
        return 204 if ok else 401


class _Handler(BaseHTTPRequestHandler):
    owner: CadReceiver

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status = self.owner.take(self.path.strip("/"), self.headers, body)
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()
