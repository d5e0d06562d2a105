"""Running engine workers: until asked to stop, and through broker resets.

The embedded broker keeps its data in memory. When it restarts, every topic, message and
committed offset is gone and a running Faust consumer would sit at a stale offset forever.
`run_engine` notices (the broker's epoch record changed, see topics.EpochWatch), stops the
Faust app, and starts a fresh one on the new, empty topics: state from before the restart is
lost with the broker's data, and processing goes on for everything published after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from atmguard.stream.topics import EpochWatch, bootstrap_of, ensure_topics

if TYPE_CHECKING:
    from atmguard.engine import Engine, EngineOptions
    from atmguard.settings import Settings

log = logging.getLogger("atmguard.worker")


async def _wait_for_broker(bootstrap: str, settings: Settings, stop: asyncio.Event) -> str | None:
    """Create the topics (and read the epoch) once the broker answers; None if stopped first."""
    from atmguard.stream.topics import ensure_epoch

    delay = 0.2
    while not stop.is_set():
        try:
            await ensure_topics(bootstrap, settings, timeout=5.0)
            return await ensure_epoch(bootstrap, timeout=5.0)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001
            log.warning("broker %s not ready (%r); retrying", bootstrap, exc)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, 3.0)
    return None


async def run_engine(
    settings: Settings,
    options: EngineOptions,
    broker_url: str,
    stop: asyncio.Event,
    *,
    on_engine: Callable[[Engine], None] | None = None,
    check_interval: float = 0.5,
) -> None:
    """Run one engine worker until `stop` is set; reset it whenever the broker lost its data."""
    from faust.contrib.asgi import faust_app_running

    from atmguard.engine import Engine

    bootstrap = bootstrap_of(broker_url)
    while not stop.is_set():
        epoch = await _wait_for_broker(bootstrap, settings, stop)
        if epoch is None:
            return
        engine = Engine(settings, options, broker_url)
        if on_engine is not None:
            on_engine(engine)
        watch = EpochWatch(bootstrap, epoch)
        reset = False
        try:
            async with faust_app_running(engine.app, stop_timeout=15.0):
                log.info("engine worker running on %s (epoch %s)", broker_url, epoch[:8])
                while not stop.is_set():
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(stop.wait(), check_interval)
                    if stop.is_set():
                        break
                    if await watch.changed() is True:
                        log.warning(
                            "broker %s lost its data (restarted): resetting the engine; state and "
                            "unprocessed events from before the restart are gone",
                            broker_url,
                        )
                        reset = True
                        break
        finally:
            await watch.close()
            with contextlib.suppress(Exception):
                engine.rule_engine.close()
        if not reset:
            return


async def main_worker(settings: Settings, broker_url: str, *, http_port: int = 0) -> int:
    """`atmguard worker`: one engine worker until SIGINT/SIGTERM; /metrics on `http_port` if given."""
    import signal

    from atmguard.engine import EngineOptions

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    server_task = None
    server = None
    if http_port:
        import uvicorn
        from fastapi import FastAPI
        from fastapi.responses import Response
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        api = FastAPI(title="atmguard worker")

        @api.get("/metrics")
        async def metrics() -> Response:
            return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

        server = uvicorn.Server(uvicorn.Config(api, host="127.0.0.1", port=http_port, log_config=None))
        server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
        server_task = asyncio.create_task(server.serve())
    options = EngineOptions.from_env(rules_dir=settings.rules_dir, data_dir=settings.data_dir)
    try:
        await run_engine(settings, options, broker_url, stop)
    finally:
        if server is not None and server_task is not None:
            server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server_task, 5)
    log.info("engine worker stopped")
    return 0
