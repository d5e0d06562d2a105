"""Open-loop HTTP load generator for `atmguard bench gateway` (runs in its own process).

Requests are sent on a fixed schedule whatever the server does, and latency is measured from
the scheduled send time, so a slow server is not hidden by a slow client (no coordinated
omission). Prints one JSON line per step.

The client is a bare asyncio protocol speaking HTTP/1.1 over keep-alive connections: on a
two-core machine the instrument shares the cores with what it measures, and an aiohttp
session cost 0.5 ms of CPU per request (a quarter of a core at 500/s) where this costs about
a fifth of that. One scheduler task fires the requests that are due; no coroutine per request.

    python -m benchmarks.loadgen '{"url": ..., "bank": ..., "key": ..., "steps": [...]}'
"""

from __future__ import annotations

import asyncio
import gc
import json
import random
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from atmguard.gateway.auth import sign_headers


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection carrying one request at a time."""

    def __init__(self, on_idle: Callable[[_Connection], None], on_lost: Callable[[_Connection], None]) -> None:
        self.on_idle = on_idle
        self.on_lost = on_lost
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.done: Callable[[int, bytes], None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def send(self, request: bytes, done: Callable[[int, bytes], None]) -> None:
        assert self.transport is not None
        self.done = done
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        head_end = self.buf.find(b"\r\n\r\n")
        if head_end < 0:
            return
        head = self.buf[:head_end].decode("latin-1")
        length = 0
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        end = head_end + 4 + length
        if len(self.buf) < end:
            return
        status = int(head.split(" ", 2)[1])
        body, self.buf = self.buf[head_end + 4 : end], self.buf[end:]
        done, self.done = self.done, None
        if done is not None:
            done(status, body)
        self.on_idle(self)

    def connection_lost(self, exc: Exception | None) -> None:
        done, self.done = self.done, None
        if done is not None:
            done(0, b"")
        self.on_lost(self)


class _Client:
    """A pool of keep-alive connections to one server; a request takes an idle one or opens one."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.idle: deque[_Connection] = deque()

    def _idle(self, conn: _Connection) -> None:
        self.idle.append(conn)

    def _lost(self, conn: _Connection) -> None:
        if conn in self.idle:
            self.idle.remove(conn)

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(lambda: _Connection(self._idle, self._lost), self.host, self.port)
        return conn

    async def warm(self, n: int) -> None:
        """Open `n` connections up front so the first step does not pay for them."""
        for conn in await asyncio.gather(*(self._open() for _ in range(n))):
            self.idle.append(conn)

    def request(self, request: bytes, done: Callable[[int, bytes], None]) -> None:
        """Send now on an idle connection, or on a new one as soon as it is open."""
        if self.idle:
            self.idle.pop().send(request, done)  # the most recently used: idle ones time out unused, never mid-request
            return

        async def later() -> None:
            try:
                conn = await self._open()
            except OSError:
                done(-1, b"")  # counted by the step as a connection error
                return
            conn.send(request, done)

        asyncio.get_running_loop().create_task(later())


def _request(method: str, path: str, host: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", *(f"{k}: {v}" for k, v in headers.items())]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def _step(client: _Client, cfg: dict[str, Any], kind: str, rate: float, seconds: float, seq: list[int]) -> dict[str, Any]:
    hot = cfg.get("hot_atms", [])
    cold = cfg.get("cold_atms", [])
    host = f"{client.host}:{client.port}"
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    holds = [0]
    n = int(rate * seconds)
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05
    finished = asyncio.Event()
    outstanding = [n]

    def build() -> bytes:
        if kind == "healthz":
            return _request("GET", "/healthz", host, {})
        seq[0] += 1
        is_hot = bool(hot) and random.random() < cfg.get("hot_share", 0.1)
        atm = random.choice(hot if is_hot else cold)
        event = {
            "type": "transfer", "id": f"bench-{cfg['run']}-{seq[0]}", "bank_id": cfg["bank"], "atm_id": atm,
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
            "amount": 400000 if is_hot else random.randint(1000, 50000), "currency": "KZT",
            "payee_new": True, "status": "initiated",
        }
        body = json.dumps(event).encode()
        headers = {"Content-Type": "application/json", **sign_headers(cfg["bank"], cfg["key"], body)}
        return _request("POST", "/v1/events", host, headers, body)

    def answered(at: float) -> Callable[[int, bytes], None]:
        def done(status: int, body: bytes) -> None:
            if status > 0:
                latencies.append((loop.time() - at) * 1000)
                statuses[str(status)] = statuses.get(str(status), 0) + 1
                if kind == "events" and b'"advice":"hold"' in body.replace(b" ", b""):
                    holds[0] += 1
            else:  # a refused or dropped connection counts, it does not end the run
                name = "ConnectionError"
                statuses[name] = statuses.get(name, 0) + 1
            outstanding[0] -= 1
            if outstanding[0] == 0:
                finished.set()

        return done

    t0 = loop.time()
    for i in range(n):
        at = start + i / rate
        request = build()  # built before its time: the schedule, not the client, sets the pace
        delay = at - loop.time()
        if delay > 0.0005:
            await asyncio.sleep(delay)
        client.request(request, answered(at))
    if n:
        try:
            await asyncio.wait_for(finished.wait(), 30)
        except TimeoutError:
            statuses["Timeout"] = statuses.get("Timeout", 0) + outstanding[0]
    elapsed = loop.time() - t0
    ok = statuses.get("200", 0) + statuses.get("202", 0)
    return {
        "kind": kind, "rate": rate, "seconds": seconds, "sent": n, "ok": ok, "achieved": ok / elapsed if elapsed else 0,
        "p50_ms": _pct(latencies, 0.50), "p90_ms": _pct(latencies, 0.90), "p99_ms": _pct(latencies, 0.99),
        "max_ms": max(latencies) if latencies else float("nan"), "statuses": statuses, "holds": holds[0],
    }


async def _main(cfg: dict[str, Any]) -> None:
    client = _Client(cfg["url"])
    await client.warm(cfg.get("connections", 64))
    seq = [0]
    # warm-up: connections, caches, the rule engine's first compile paths
    await _step(client, cfg, "events", 100, 1.0, seq)
    await _step(client, cfg, "healthz", 100, 1.0, seq)
    print(json.dumps({"kind": "warmup"}), flush=True)
    for kind, rate, seconds in cfg["steps"]:
        # the instrument must not pause: no cycle collection while a step runs, one between steps
        gc.collect()
        gc.disable()
        try:
            result = await _step(client, cfg, kind, float(rate), float(seconds), seq)
        finally:
            gc.enable()
        print(json.dumps(result), flush=True)
        await asyncio.sleep(0.5)


def main() -> None:
    asyncio.run(_main(json.loads(sys.argv[1])))


if __name__ == "__main__":
    main()
