"""The bench's load generator (atmguard/gateway/loadgen.py) counts what the server answered:
statuses, hold advice and latency from the scheduled send time, over keep-alive connections."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import uvicorn

from atmguard.gateway.auth import verify
from benchmarks.loadgen import _Client, _step

KEY = "k" * 32


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A tiny bank API: checks the signature, holds at ATM atm-hot, answers 401 to a bad one."""
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
    if scope["path"] == "/healthz":
        status, answer = 200, {"status": "ok"}
    else:
        try:
            verify([KEY], headers.get("x-atmguard-timestamp"), headers.get("x-atmguard-signature"), body, skew_s=300)
            event = json.loads(body)
            status, answer = 202, {"advice": "hold" if event["atm_id"] == "atm-hot" else "allow"}
        except Exception:  # noqa: BLE001 - any bad request is a 401 for this stand-in bank endpoint
            status, answer = 401, {"error": "bad signature"}
    payload = json.dumps(answer).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})


def test_steps_count_statuses_holds_and_latency() -> None:
    async def go() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        server = uvicorn.Server(uvicorn.Config(_app, host="127.0.0.1", port=0, log_level="warning"))
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        cfg = {"url": f"http://127.0.0.1:{port}", "bank": "b1", "key": KEY, "run": "t",
               "hot_atms": ["atm-hot"], "cold_atms": ["atm-cold"], "hot_share": 0.5}
        client = _Client(cfg["url"])
        await client.warm(4)
        seq = [0]
        try:
            health = await _step(client, cfg, "healthz", 200, 0.5, seq)
            events = await _step(client, cfg, "events", 200, 0.5, seq)
            wrong_key = await _step(client, {**cfg, "key": "wrong"}, "events", 100, 0.2, seq)
        finally:
            server.should_exit = True
            await task
        return health, events, wrong_key

    health, events, wrong_key = asyncio.run(go())
    assert health["statuses"] == {"200": 100} and health["ok"] == 100
    assert events["statuses"] == {"202": 100}
    assert 20 < events["holds"] < 80  # half of the events go to the hot ATM
    assert 0 < events["p50_ms"] <= events["p99_ms"] <= events["max_ms"]
    assert wrong_key["statuses"] == {"401": 20} and wrong_key["ok"] == 0
