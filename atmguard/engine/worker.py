"""Running engine workers: until asked to stop, and through broker resets.

The embedded broker keeps its data in memory. When it restarts, every topic, message and
committed offset is gone and a running Faust consumer would sit at a stale offset forever.
`run_engine` notices (the broker's epoch record changed, see topics.EpochWatch) and replaces
the Faust app with a fresh one on the new, empty topics: state from before the restart is
lost with the broker's data, and processing goes on for everything published after it.

The old app runs on against the restarted broker until the change is noticed, and whatever
it still sends there is harmful: offsets of the old topics, committed into the new ones,
would skip new events; its retried records break the partitions they land on (Tansu 0.6.0,
see kafka/compat.abort_producer); and its commits for topics that are gone are retried by
aiokafka forever, which is how the reset used to hang. So (1) consumer group and state
topic are per epoch (engine.app_id_for): what the old app commits or writes lands in names
the new one never reads; (2) the old app is fenced before it is stopped: it commits nothing,
its pending records are failed, and a stop that still does not finish in time is abandoned.
The same replacement, on the same epoch, follows an app crash or a batch interrupted
half-way (the new app resumes from the last committed offset).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from atmguard.core import runtime_policy
from atmguard.kafka.compat import abandon_consumer_thread
from atmguard.kafka.topics import EpochWatch, bootstrap_of, ensure_topics

if TYPE_CHECKING:
    from atmguard.core.settings import Settings
    from atmguard.engine.faust_app import Engine, EngineOptions

log = logging.getLogger("atmguard.worker")

RESTART_DELAY_S = 1.0
"""Pause before replacing an app that crashed or failed to start (no tight restart loop)."""


async def _wait_for_broker(
    bootstrap: str, settings: Settings, stop: asyncio.Event, broker_down: asyncio.Event | None = None
) -> str | None:
    """Create the topics (and read the epoch) once the broker answers; None if stopped first.

    While `broker_down` is set (`atmguard up` restarting its broker) the broker is not ours to use.
    """
    from atmguard.kafka.topics import ensure_epoch

    delay = 0.2
    while not stop.is_set():
        if broker_down is not None and broker_down.is_set():
            await asyncio.sleep(0.1)
            continue
        try:
            await ensure_topics(bootstrap, settings, timeout=5.0)
            return await ensure_epoch(bootstrap, timeout=5.0)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure to reach the broker: wait and try again
            log.warning("broker %s not ready (%r); retrying", bootstrap, exc)
            await _sleep_unless(stop, delay)
            delay = min(delay * 2, 3.0)
    return None


async def _sleep_unless(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)


async def run_engine(
    settings: Settings,
    options: EngineOptions,
    broker_url: str,
    stop: asyncio.Event,
    *,
    on_engine: Callable[[Engine], None] | None = None,
    check_interval: float | None = None,
    broker_down: asyncio.Event | None = None,
) -> None:
    """Run one engine worker until `stop` is set; replace its app when it cannot go on (see module doc).

    `broker_down`: set by whoever restarts the broker (`atmguard up`) as soon as it died: the
    app is fenced and stopped before the broker comes back, so nothing of it reaches the new one.
    """
    from atmguard.engine.faust_app import Engine

    bootstrap = bootstrap_of(broker_url)
    interval = options.epoch_check_s if check_interval is None else check_interval
    while not stop.is_set():
        epoch = await _wait_for_broker(bootstrap, settings, stop, broker_down)
        if epoch is None:
            return
        engine = Engine(settings, options, broker_url, epoch=epoch)
        if on_engine is not None:
            on_engine(engine)
        watch = EpochWatch(bootstrap, epoch)
        starting = asyncio.ensure_future(_start_app(engine.app))
        reason: str | None = None
        try:
            reason = await _supervise(engine, starting, watch, stop, interval, broker_down)
        finally:
            await watch.close()
            await _stop_app(engine, starting, options.stop_timeout_s)
            with contextlib.suppress(Exception):
                engine.rule_engine.close()
        if reason is None:
            return
        if reason == "crashed":
            await _sleep_unless(stop, RESTART_DELAY_S)



async def _start_app(app: Any) -> bool:
    from faust.contrib.asgi import bind_to_running_loop

    bind_to_running_loop(app)
    app.finalize()
    return bool(await app.maybe_start())


async def _supervise(
    engine: Engine,
    starting: asyncio.Future[bool],
    watch: EpochWatch,
    stop: asyncio.Event,
    interval: float,
    broker_down: asyncio.Event | None,
) -> str | None:
    """Wait until the app must go: None when stopped, else why it is replaced (already fenced)."""
    running = False
    while not stop.is_set():
        await _sleep_unless(stop, interval)
        if stop.is_set():
            return None
        if not running and starting.done():
            if starting.cancelled() or starting.exception() is not None:
                exc = None if starting.cancelled() else starting.exception()
                log.error("engine worker could not start (%r); starting a fresh one", exc)
                engine.fence("it failed to start", abort_producer=True)
                return "crashed"
            running = True
            log.info("engine worker running on %s (epoch %s)", engine.broker_url, (engine.epoch or "")[:8])
        if broker_down is not None and broker_down.is_set():
            engine.fence("the embedded broker died", abort_producer=True)
            log.warning("embedded broker down: engine stopped, it starts afresh on the restarted broker")
            return "reset"
        if engine.needs_restart is not None:
            log.warning("replacing the engine's Faust app (%s): it resumes from the last committed offset",
                        engine.needs_restart)
            return "restart"
        if running and engine.app.crashed:
            engine.fence("the Faust app crashed")
            log.error("engine's Faust app crashed (%r); starting a fresh one", engine.app.crash_reason)
            return "crashed"
        if await watch.changed() is True:
            engine.fence("the broker lost its data", abort_producer=True)
            log.warning(
                "broker %s lost its data (restarted): resetting the engine; state and unprocessed events "
                "from before the restart are gone",
                engine.broker_url,
            )
            return "reset"
    return None


async def _stop_app(engine: Engine, starting: asyncio.Future[bool], timeout: float) -> None:
    """Stop the app within `timeout`, else abandon it: its consumer thread is ended, nothing waits for it."""
    app = engine.app
    if not starting.done():
        starting.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.wait({starting}, timeout=timeout)
    stopping = asyncio.ensure_future(app.stop())
    done, _ = await asyncio.wait({stopping}, timeout=timeout)
    if stopping in done:
        if not stopping.cancelled() and stopping.exception() is not None:
            log.warning("engine's Faust app stopped with an error: %r", stopping.exception())
        return
    log.error("engine's Faust app did not stop within %.0f s: abandoning it", timeout)
    engine.fence("abandoned", abort_producer=True)
    abandon_consumer_thread(app)


async def main_worker(settings: Settings, broker_url: str, *, http_port: int = 0) -> int:
    """`atmguard worker`: one engine worker until SIGINT/SIGTERM; /metrics on `http_port` if given."""
    import signal

    from atmguard.engine.faust_app import EngineOptions

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
    runtime_policy.install()  # start-up objects frozen now, the engine's state every second after
    try:
        await run_engine(settings, options, broker_url, stop)
    finally:
        if server is not None and server_task is not None:
            server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server_task, 5)
    log.info("engine worker stopped")
    return 0
