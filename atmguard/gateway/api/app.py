"""The gateway's FastAPI app: bank API, dispatcher console, health; assembled in one place.

`atmguard up` calls `create_app(settings, publisher=..., bootstrap=broker.bootstrap, notifier=...)`
and serves it with uvicorn. The caller owns the publisher's lifecycle (start/stop); the app's
lifespan runs the topic follower (advisor + case recorder) and the bank webhooks.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware

from atmguard import __version__
from atmguard.core import runtime_policy
from atmguard.core.settings import GatewaySettings, Settings
from atmguard.gateway.advisor import HoldAdvisor, advisor_from_rules
from atmguard.gateway.api.state import GatewayState, Notifier, Publisher
from atmguard.gateway.atms import load_atms
from atmguard.gateway.casebook import CaseBook
from atmguard.gateway.follower import Recorder, TopicFollower
from atmguard.gateway.keys import BankKeys
from atmguard.gateway.live import LiveFeed
from atmguard.gateway.ratelimit import RateLimiter
from atmguard.gateway.receipts import ReceiptWriter, recent_receipts
from atmguard.gateway.secrets import bank_master_secret, session_secret
from atmguard.gateway.webhooks import BankWebhooks
from atmguard.notifier.api import include_notifier
from atmguard.notifier.service import NotifierService
from atmguard.store.db import make_engine, make_sessionmaker, migrate

log = logging.getLogger(__name__)
HERE = Path(__file__).resolve().parents[1]  # the gateway folder: static/ and templates/

DESCRIPTION = """
Banks post transfer, withdrawal and deposit events; the answer carries **hold advice**.

**Signing.** Every request carries `X-Atmguard-Bank: BANK_ID`, `X-Atmguard-Timestamp: UNIX_SECONDS` and
`X-Atmguard-Signature: sha256=HEX`, where HEX is HMAC-SHA256 with your bank key over
`TIMESTAMP + "." + RAW_BODY`. Keys come from `atmguard banks add BANK_ID`.

**Errors** are `{"error": "...", "field": "..."}`; `field` names the bad JSON field (`events[3].amount`).
"""


def create_app(
    settings: Settings,
    *,
    publisher: Publisher,
    advisor: HoldAdvisor | None = None,
    notifier: Any | None = None,
    bootstrap: str | None = None,
    config: GatewaySettings | None = None,
    database_url: str | None = None,
) -> FastAPI:
    """The gateway app.

    publisher: EventPublisher (started by the caller); `publish(event)` returns after the broker ack.
    advisor:   hold advisor; default: one with a RuleEngine over `settings.rules_dir`.
    notifier:  NotifierService: console acks call its `acknowledge`; its webhooks are served at /twilio
               and its ack API at /v1/interventions (atmguard.notifier.api).
    bootstrap: broker `host:port`; when given, the app follows the facts, bank and interventions
               topics (advisor state, case recorder, bank webhooks).
    """
    cfg = config or settings.gateway
    url = database_url or settings.resolved_database_url()
    migrate(url)
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    live = LiveFeed()
    cases = CaseBook(sessions, load_atms(settings.config_dir), live)
    keys = BankKeys(sessions, bank_master_secret(settings))
    if advisor is None:
        advisor = advisor_from_rules(settings.rules_dir, cfg.hold_ttl_s)
    webhooks = BankWebhooks(keys, cases, retries=cfg.webhook_retries, timeout_s=cfg.webhook_timeout_s)
    receipts: dict[tuple[str, str], dict[str, Any]] = {}
    recorder = Recorder(cases, advisor, webhooks, customer_window_s=cfg.customer_window_s, known=receipts.__contains__)
    state = GatewayState(
        settings=settings,
        config=cfg,
        sessions=sessions,
        keys=keys,
        cases=cases,
        publisher=publisher,
        advisor=advisor,
        recorder=recorder,
        limiter=RateLimiter(cfg.rate_per_s, cfg.rate_burst),
        receipt_writer=ReceiptWriter(sessions),
        receipts=receipts,
        notifier=notifier if hasattr(notifier, "acknowledge") else None,
    )
    since = datetime.now(UTC) - timedelta(seconds=cfg.receipts_memory_s)
    state.receipts.update(recent_receipts(sessions, since, state.receipts_max))
    follower = TopicFollower(bootstrap, settings, recorder, bank_every_s=cfg.bank_follow_s) if bootstrap else None
    watcher = advisor.watcher if follower is not None else None  # the advisor's rules reload beside the follower

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if follower is not None:
            await follower.start()
        if watcher is not None:
            await watcher.start()
        add_listener = getattr(notifier, "add_listener", None)
        if add_listener is not None:
            loop = asyncio.get_running_loop()
            add_listener(lambda iv_id: loop.call_soon_threadsafe(_notifier_changed, cases, iv_id))
        runtime_policy.install()  # after start-up: what is loaded by now is never scanned again
        try:
            yield
        finally:
            if watcher is not None:
                await watcher.stop()
            if follower is not None:
                await follower.stop()
            await webhooks.aclose()
            await state.receipt_writer.aclose()
            engine.dispose()

    app = GatewayApp(
        title="atmguard gateway",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    _offline_docs(app)
    app.state.gateway = state
    app.state.follower = follower
    app.state.webhooks = webhooks
    app.add_middleware(
        SessionMiddleware,
        secret_key=session_secret(settings),
        session_cookie="atmguard_session",
        max_age=12 * 3600,
        same_site="strict",
        https_only=settings.public_url.startswith("https://"),
    )

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        err = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        field = ".".join(str(p) for p in err["loc"] if p not in ("body", "query", "path", "header")) or None
        return JSONResponse({"error": err["msg"], "field": field}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail), "field": None}, status_code=exc.status_code, headers=exc.headers)

    from atmguard.gateway.api import console, events, health

    app.include_router(health.router)
    app.include_router(events.router)
    app.include_router(console.router)
    app.mount("/console/static", StaticFiles(directory=HERE / "static"), name="console-static")
    if isinstance(notifier, NotifierService):
        include_notifier(app, notifier)
    return app


def _notifier_changed(cases: CaseBook, iv_id: str) -> None:
    """A notification or ack changed in the notifier: an SMS-reply ack acknowledges the case too,
    and every open console redraws the case (delivery states are in its timeline)."""
    try:
        from sqlalchemy import select

        from atmguard.notifier.models import Acknowledgement

        with cases.sessions() as session:
            ack = session.scalars(select(Acknowledgement).where(Acknowledgement.intervention_id == iv_id)).first()
        summary = cases.summary(iv_id)
        if summary is None:
            return
        if ack is not None and summary["state"] == "open" and ack.via != "console":
            cases.acknowledge(iv_id, ack.by, ack.via)
        else:
            cases.live.publish("case", summary)
    except Exception:  # the console is a view: never let it break the notifier's callback
        log.exception("cannot reflect notifier change of %s", iv_id)


class GatewayApp(FastAPI):
    """The FastAPI app, with POST /v1/events served before FastAPI's own per-request layers.

    The bank API needs no session cookie, routing table, dependency solving, telemetry or
    exception middleware (its handler answers every input itself, 500 included). Skipping the
    sessions and routing saved about a third of its CPU per request, skipping FastAPI's outer
    layers too another 2 % (docs/benchmarks.md). The route stays declared on the app for the
    OpenAPI document; the handler is the same function."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/v1/events" and scope["method"] == "POST":
            from atmguard.gateway.api.events import post_events

            scope["app"] = self  # what Request.app (and so the handler's state) reads
            try:
                response = await post_events(Request(scope, receive))
            except Exception:  # a bug must answer 500 in the API's own shape, not drop the connection
                log.exception("bank API request failed")
                response = JSONResponse({"error": "internal error; the event was not accepted", "field": None}, status_code=500)
            await response(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def _offline_docs(app: FastAPI) -> None:
    """Swagger UI at /docs and ReDoc at /redoc from files served here (banks' networks have no CDN)."""
    from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
    from fastapi.responses import HTMLResponse

    static = Path(importlib.import_module("fastapi_offline").__file__ or "").parent / "static"
    app.mount("/docs-static", StaticFiles(directory=static), name="docs-static")

    @app.get("/docs", include_in_schema=False)
    async def _swagger() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json", title="atmguard bank API",
            swagger_js_url="/docs-static/swagger-ui-bundle.js", swagger_css_url="/docs-static/swagger-ui.css",
            swagger_favicon_url="/docs-static/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    async def _redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url="/openapi.json", title="atmguard bank API",
            redoc_js_url="/docs-static/redoc.standalone.js", redoc_favicon_url="/docs-static/favicon.png", with_google_fonts=False,
        )


__all__ = ["create_app", "Publisher", "Notifier"]
