"""Open-loop HTTP load generator for `atmguard bench gateway` (runs in its own process).

Requests are sent on a fixed schedule whatever the server does, and latency is measured from
the scheduled send time, so a slow server is not hidden by a slow client (no coordinated
omission). Prints one JSON line per step.

    python -m atmguard.gateway.loadgen '{"url": ..., "bank": ..., "key": ..., "steps": [...]}'
"""

from __future__ import annotations

import asyncio
import gc
import json
import random
import sys
import time
from typing import Any

from atmguard.gateway.auth import sign_headers


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


async def _step(session: Any, cfg: dict[str, Any], kind: str, rate: float, seconds: float, seq: list[int]) -> dict[str, Any]:
    url = cfg["url"]
    hot = cfg.get("hot_atms", [])
    cold = cfg.get("cold_atms", [])
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    holds = 0
    n = int(rate * seconds)
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05

    async def one(i: int) -> None:
        nonlocal holds
        at = start + i / rate
        delay = at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        try:
            if kind == "healthz":
                async with session.get(f"{url}/healthz") as resp:
                    await resp.read()
                    status = resp.status
            else:
                seq[0] += 1
                is_hot = hot and random.random() < cfg.get("hot_share", 0.1)
                atm = random.choice(hot if is_hot else cold)
                event = {
                    "type": "transfer", "id": f"bench-{cfg['run']}-{seq[0]}", "bank_id": cfg["bank"], "atm_id": atm,
                    "ts": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
                    "amount": 400000 if is_hot else random.randint(1000, 50000), "currency": "KZT",
                    "payee_new": True, "status": "initiated",
                }
                body = json.dumps(event).encode()
                headers = {"Content-Type": "application/json", **sign_headers(cfg["bank"], cfg["key"], body)}
                async with session.post(f"{url}/v1/events", data=body, headers=headers) as resp:
                    answer = await resp.json(content_type=None)
                    status = resp.status
                    if isinstance(answer, dict) and answer.get("advice") == "hold":
                        holds += 1
            latencies.append((loop.time() - at) * 1000)
            statuses[str(status)] = statuses.get(str(status), 0) + 1
        except Exception as exc:  # a refused connection counts, it does not end the run
            statuses[type(exc).__name__] = statuses.get(type(exc).__name__, 0) + 1

    t0 = loop.time()
    await asyncio.gather(*(one(i) for i in range(n)))
    elapsed = loop.time() - t0
    ok = statuses.get("200", 0) + statuses.get("202", 0)
    return {
        "kind": kind, "rate": rate, "seconds": seconds, "sent": n, "ok": ok, "achieved": ok / elapsed if elapsed else 0,
        "p50_ms": _pct(latencies, 0.50), "p90_ms": _pct(latencies, 0.90), "p99_ms": _pct(latencies, 0.99),
        "max_ms": max(latencies) if latencies else float("nan"), "statuses": statuses, "holds": holds,
    }


async def _main(cfg: dict[str, Any]) -> None:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=cfg.get("connections", 256))
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        seq = [0]
        # warm-up: connections, caches, the rule engine's first compile paths
        await _step(session, cfg, "events", 100, 1.0, seq)
        await _step(session, cfg, "healthz", 100, 1.0, seq)
        print(json.dumps({"kind": "warmup"}), flush=True)
        for kind, rate, seconds in cfg["steps"]:
            # the instrument must not pause: no cycle collection while a step runs (thousands of
            # scheduled request coroutines are alive), one between steps instead
            gc.collect()
            gc.disable()
            try:
                result = await _step(session, cfg, kind, float(rate), float(seconds), seq)
            finally:
                gc.enable()
            print(json.dumps(result), flush=True)
            await asyncio.sleep(0.5)


def main() -> None:
    asyncio.run(_main(json.loads(sys.argv[1])))


if __name__ == "__main__":
    main()
