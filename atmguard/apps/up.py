"""`atmguard up`: the whole stack in one process, on one HTTP port.

    embedded Tansu broker (unless --broker) ─ engine worker (Faust) ─ notifier ─ gateway + console
                                                                       └─ /metrics, /healthz

Started in that order and stopped in reverse on Ctrl-C/SIGTERM within seconds. A part that is
not configured (no deployment config: no notifier) is skipped with a log line saying so; the
engine always runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from atmguard.core.settings import Settings

log = logging.getLogger("atmguard.up")

DEFAULT_KAFKA_PORT = 9092


def configure_logging(verbose: bool = False) -> None:
    """One line per event; Faust's and aiokafka's chatter only from WARNING up."""
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    noisy = ("faust", "mode", "aiokafka", "kafka", "uvicorn.access")
    for name in noisy:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
    # Faust's own services log as the app's module logger ("atmguard.engine.faust_app [^FaustApp]: ...")
    logging.getLogger("atmguard.engine.faust_app").addFilter(lambda r: verbose or not r.getMessage().startswith("[^"))


def apply_overrides(**values: Any) -> Settings:
    """Settings from the environment with the command's flags on top (a flag given wins; None: not given)."""
    return Settings(**{name: value for name, value in values.items() if value is not None})


@dataclass
class Stack:
    """What `up` (and the demo) started, to stop it in reverse order."""

    settings: Settings
    broker_url: str
    broker: Any = None
    sink: Any = None
    publisher: Any = None
    notifier: Any = None
    engines: list[Any] = field(default_factory=list)
    stop_event: asyncio.Event = field(default_factory=asyncio.Event)
    broker_down: asyncio.Event = field(default_factory=asyncio.Event)
    """Set while the embedded broker is being restarted (see _supervise_broker)."""
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    @property
    def bootstrap(self) -> str:
        from atmguard.kafka.topics import bootstrap_of

        return bootstrap_of(self.broker_url)

    @property
    def engine(self) -> Any:
        return self.engines[-1] if self.engines else None


def start_broker(settings: Settings, data_dir: Path, *, port: int | None = None) -> Any:
    """The embedded broker on 9092 if free (so `atmguard publish` finds it), else any free port."""
    from atmguard.kafka.broker import EmbeddedBroker, _listening, free_port

    if port is None:
        port = free_port() if _listening("127.0.0.1", DEFAULT_KAFKA_PORT) else DEFAULT_KAFKA_PORT
    broker = EmbeddedBroker(port=port, data_dir=data_dir / "broker").start()
    run = data_dir / "run"
    run.mkdir(parents=True, exist_ok=True)
    (run / "broker.url").write_text(broker.url + "\n", encoding="utf-8")
    log.info("embedded broker (Tansu %s, in-memory: a restart loses all topics) at %s", "0.6.0", broker.url)
    return broker


def start_local_twilio(settings: Settings) -> Any:
    """A local Twilio-compatible server when no real credentials are configured (SMS/calls stay here)."""
    token = settings.twilio_auth_token.get_secret_value() if settings.twilio_auth_token else None
    if (settings.twilio_account_sid and token) or settings.twilio_base_url:
        return None
    from atmguard.apps.twilio_sink import TwilioSink

    sink = TwilioSink(auto_status=True).start()
    settings.twilio_base_url = sink.base_url  # the settings object every part of this stack was given
    log.info("no Twilio credentials configured: SMS and radio calls go to a local Twilio-compatible server at %s",
             sink.base_url)
    return sink


async def start_notifier(settings: Settings, bootstrap: str) -> Any:
    """The notifier consuming the interventions topic, or None if it or its config is missing."""
    from atmguard.notifier.config import load_deployment
    from atmguard.notifier.service import NotifierService

    try:
        config = load_deployment(settings.config_dir)
    except Exception as exc:  # noqa: BLE001 - a bad config must say where, and not stop the engine
        log.error("notifier not started: deployment config in %s: %s", settings.config_dir, exc)
        return None
    notifier = NotifierService(settings, config, settings.resolved_database_url())
    await notifier.start(bootstrap)
    return notifier


def build_api(stack: Stack) -> FastAPI:
    """One FastAPI app: the gateway (bank API, console, /twilio), plus /metrics and /healthz."""
    from atmguard.gateway.api.app import create_app

    api = create_app(stack.settings, publisher=stack.publisher, notifier=stack.notifier, bootstrap=stack.bootstrap)

    @api.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @api.get("/healthz/engine", include_in_schema=False)
    async def engine_health() -> JSONResponse:
        engine = stack.engine
        ok = engine is not None and engine.restored > 0
        body = {
            "engine": "running" if ok else "starting",
            "broker": stack.broker_url,
            "processed": getattr(engine, "processed", 0),
            "published": getattr(engine, "published", 0),
        }
        return JSONResponse(body, status_code=200 if ok else 503)

    return api


async def start_stack(
    settings: Settings,
    *,
    data_dir: Path,
    broker_url: str | None = None,
    engine_options: Any = None,
    with_notifier: bool = True,
    local_twilio: bool = True,
    broker_port: int | None = None,
) -> Stack:
    """Broker (embedded unless `broker_url`; on `broker_port` if given), publisher, engine task and notifier."""
    from atmguard.engine.faust_app import EngineOptions
    from atmguard.engine.worker import run_engine
    from atmguard.kafka.publisher import EventPublisher
    from atmguard.kafka.topics import bootstrap_of, ensure_topics

    broker = None
    if broker_url is None:
        broker = await asyncio.to_thread(start_broker, settings, data_dir, port=broker_port)
        broker_url = broker.url
    stack = Stack(settings=settings, broker_url=broker_url, broker=broker)
    await ensure_topics(bootstrap_of(broker_url), settings)
    stack.sink = start_local_twilio(settings) if local_twilio else None
    stack.publisher = EventPublisher(stack.bootstrap, settings)
    await stack.publisher.start()
    options = engine_options or EngineOptions.from_env(rules_dir=settings.rules_dir, data_dir=data_dir)
    stack.tasks.append(
        asyncio.create_task(
            run_engine(
                settings, options, broker_url, stack.stop_event, on_engine=stack.engines.append,
                broker_down=stack.broker_down if broker is not None else None,
            ),
            name="engine",
        )
    )
    if broker is not None:
        stack.tasks.append(asyncio.create_task(_supervise_broker(stack), name="broker-supervisor"))
    if with_notifier:
        stack.notifier = await start_notifier(settings, stack.bootstrap)
    return stack


async def _supervise_broker(stack: Stack) -> None:
    """Restart the embedded broker if it dies, so that the restarted (empty) broker stays sound.

    Tansu 0.6.0 breaks a partition for good when a client retries a record into it across a
    restart, before its topic exists (see publisher.abort_producer), and clients auto-create
    topics with its default partition count. So, in this order: (1) `broker_down` is set: the
    engine fences and stops its Faust app, the publisher fails what it has pending (the bank
    API answers 503 meanwhile); (2) the broker is started and the topics created; (3)
    `broker_down` is cleared: the engine starts afresh on the new epoch, the publisher
    reconnects on the next event, the notifier notices the new epoch by itself.
    """
    from atmguard.kafka.topics import ensure_topics

    broker = stack.broker
    while not stack.stop_event.is_set():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stack.stop_event.wait(), 0.5)
        if stack.stop_event.is_set() or broker.running():
            continue
        log.error("embedded broker exited; restarting it on %s (all topics and unprocessed events are lost)",
                  broker.url)
        stack.broker_down.set()
        try:
            if stack.publisher is not None:
                await stack.publisher.abort()
            await _engine_fenced(stack, timeout=10.0)
            await asyncio.to_thread(broker.start)
            await ensure_topics(stack.bootstrap, stack.settings)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            log.error("could not restart the embedded broker (a client's close was cancelled); trying again")
        except Exception as exc:  # noqa: BLE001 - try again on the next round
            log.error("could not restart the embedded broker: %s", exc)
        finally:
            stack.broker_down.clear()


async def _engine_fenced(stack: Stack, timeout: float) -> None:
    """Until the running engine has fenced its app (it checks `broker_down` twice a second)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline and not stack.stop_event.is_set():
        engine = stack.engine
        if engine is None or getattr(engine, "fenced", None) is not None:
            return
        await asyncio.sleep(0.05)
    log.warning("the engine did not stop within %.0f s; restarting the broker anyway", timeout)


async def stop_stack(stack: Stack, data_dir: Path | None = None) -> None:
    """Stop everything `start_stack` started, in reverse order."""
    stack.stop_event.set()
    if stack.notifier is not None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(stack.notifier.stop(), 10)
    for task in stack.tasks:
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(task, 15)
    if stack.publisher is not None:
        await stack.publisher.stop()
    if stack.sink is not None:
        with contextlib.suppress(Exception):
            stack.sink.stop()
    if stack.broker is not None:
        await asyncio.to_thread(stack.broker.stop)
        if data_dir is not None:
            with contextlib.suppress(OSError):
                (data_dir / "run" / "broker.url").unlink()


async def run_up(settings: Settings, *, host: str, http_port: int, data_dir: Path, broker_url: str | None) -> int:
    """Run the stack until Ctrl-C / SIGTERM."""
    import uvicorn

    data_dir.mkdir(parents=True, exist_ok=True)
    loop = asyncio.get_running_loop()
    interrupted = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, interrupted.set)
    stack = await start_stack(settings, data_dir=data_dir, broker_url=broker_url)
    try:
        if interrupted.is_set():
            return 130
        api = build_api(stack)
        config = uvicorn.Config(api, host=host, port=http_port, log_config=None, lifespan="on",
                                timeout_graceful_shutdown=3)
        server = uvicorn.Server(config)
        _leave_signals_to_us(server)
        log.info("atmguard is up: http://%s:%d (bank API /v1/events, console /console, metrics /metrics); "
                 "broker %s; Ctrl-C stops everything", host, http_port, stack.broker_url)
        serve = asyncio.create_task(server.serve())
        waiter = asyncio.create_task(interrupted.wait())
        await asyncio.wait({serve, waiter}, return_when=asyncio.FIRST_COMPLETED)
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(serve, 5)
        waiter.cancel()
        # uvicorn returned on its own without ever serving: it could not bind
        if serve.done() and not interrupted.is_set() and not server.started:
            log.error("could not serve HTTP on %s:%d (port in use?)", host, http_port)
            return 1
        return 0
    finally:
        log.info("stopping: engine, notifier, broker")
        await stop_stack(stack, data_dir)
        log.info("stopped")


def _leave_signals_to_us(server: Any) -> None:
    """uvicorn would install its own SIGINT/SIGTERM handlers; one owner keeps shutdown predictable."""

    @contextlib.contextmanager
    def no_capture() -> Any:
        yield

    if hasattr(server, "capture_signals"):
        server.capture_signals = no_capture
    if hasattr(server, "install_signal_handlers"):
        server.install_signal_handlers = lambda *a, **k: None
