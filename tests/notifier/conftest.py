"""Fixtures for the notifier: the local Twilio sink, a database (SQLite, or PostgreSQL when
ATMGUARD_TEST_POSTGRES_URL is set), a NotifierService on a manual clock, and the webhook app
served over real HTTP so the sink can play back signed callbacks."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI

from atmguard.apps.twilio_sink import TwilioSink
from atmguard.core.contracts import Actions, Intervention, Mode, Severity
from atmguard.core.settings import Settings
from atmguard.notifier.api import include_notifier
from atmguard.notifier.clock import ManualClock
from atmguard.notifier.config import DeploymentConfig, load_deployment, parse_deployment
from atmguard.notifier.db import migrate_notifier
from atmguard.notifier.service import NotifierService
from atmguard.notifier.views import InterventionStatus
from tests import factories

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
POSTGRES_URL = os.environ.get("ATMGUARD_TEST_POSTGRES_URL")

# 09:30 UTC = 14:30 in Zhezkazgan (UTC+5): the day shift.
DAY = datetime(2026, 2, 10, 9, 30, tzinfo=UTC)
# 17:30 UTC = 22:30 local: the night shift.
NIGHT = datetime(2026, 2, 10, 17, 30, tzinfo=UTC)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_iv(
    n: int = 1,
    *,
    atm_id: str = "atm-zhez-001",
    ts: datetime = DAY,
    mode: Mode = "enforce",
    severity: Severity = "critical",
    sms: tuple[str, ...] = ("patrol",),
    radio: tuple[str, ...] = (),
    webhook: tuple[str, ...] = (),
) -> Intervention:
    """An intervention like the Zhezkazgan case: 4 min 10 s on the phone, 7 glances, 400 000 KZT."""
    phone = factories.fact(id=f"fact-{n}", atm_id=atm_id, ts=ts, duration_s=250)
    glances = factories.fact("looking_around", id=f"glance-{n}", atm_id=atm_id, ts=ts, duration_s=250, count=7)
    money = factories.bank_event(id=f"trx-{n}", atm_id=atm_id, ts=ts, amount=400000)
    return factories.intervention(
        rule="phone-coached-transfer", severity=severity, mode=mode, atm_id=atm_id, ts=ts,
        evidence=[phone.id, money.id],  # the glances explain the firing but are not its evidence
        actions=Actions(sms=list(sms), radio=list(radio), webhook=list(webhook)),
        matched=[factories.matched("on_phone", phone), factories.matched("glances", glances),
                 factories.matched("transfer", money)],
    )


def deployment_with(**changes: str) -> DeploymentConfig:
    """The shipped deployment.yaml with text replacements (old=new pairs via dict)."""
    text = (CONFIGS / "deployment.yaml").read_text(encoding="utf-8")
    for old, new in changes.items():
        assert old in text, old
        text = text.replace(old, new)
    return parse_deployment(text, "deployment.yaml")


@pytest.fixture(scope="session")
def deployment() -> DeploymentConfig:
    return load_deployment(CONFIGS)


@pytest.fixture
def sink() -> Iterator[TwilioSink]:
    with TwilioSink() as s:
        yield s


def _pg_schema_url(base: str) -> tuple[str, str]:
    schema = "nt_" + uuid.uuid4().hex[:12]
    sep = "&" if "?" in base else "?"
    return schema, f"{base}{sep}options=-csearch_path%3D{schema}"


@pytest.fixture(params=["sqlite", "postgres"])
def any_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """SQLite in a tmp dir, and PostgreSQL in a schema of its own when configured."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'notifier.db'}"  # migrated from scratch by the service
        return
    if not POSTGRES_URL:
        pytest.skip("ATMGUARD_TEST_POSTGRES_URL not set")
    from sqlalchemy import create_engine, text

    schema, url = _pg_schema_url(POSTGRES_URL)
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield url
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated SQLite file; each test gets a copy (a migration costs ~0.5 s)."""
    path = tmp_path_factory.mktemp("template") / "notifier.db"
    migrate_notifier(f"sqlite:///{path}")
    return path


@pytest.fixture
def db_url(tmp_path: Path, migrated_sqlite: Path) -> str:
    import shutil

    shutil.copy(migrated_sqlite, tmp_path / "notifier.db")
    return f"sqlite:///{tmp_path / 'notifier.db'}"


class Harness:
    """A NotifierService on a manual clock, talking to the sink through the real twilio SDK,
    with its webhooks served over HTTP at `public_url`."""

    def __init__(self, sink: TwilioSink, config: DeploymentConfig, db_url: str, *, serve: bool = True, **kw: Any) -> None:
        self.sink = sink
        self.config = config
        self.db_url = db_url
        self.clock = ManualClock(datetime(2026, 2, 10, 9, 30, 5, tzinfo=UTC))
        self.port = free_port()
        self.public_url = f"http://127.0.0.1:{self.port}"
        self.serve = serve
        self.kw = kw
        self.service: NotifierService | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        sink.inbound_url = f"{self.public_url}/twilio/sms"
        sink.number = "+77102000100"

    @property
    def svc(self) -> NotifierService:
        assert self.service is not None
        return self.service

    def settings(self) -> Settings:
        return Settings(twilio_base_url=self.sink.base_url, public_url=self.public_url, config_dir=CONFIGS)

    async def start(self) -> NotifierService:
        """(Re)start the service (a fresh instance on the same DB: a restart) and its web app."""
        self.service = NotifierService(self.settings(), self.config, self.db_url, clock=self.clock, tick_s=None, **self.kw)
        await self.service.start()
        if self.serve:
            app = FastAPI()
            include_notifier(app, self.service)
            self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"))
            self._thread = threading.Thread(target=self._server.run, daemon=True)
            self._thread.start()
            deadline = time.monotonic() + 10
            while not self._server.started:
                if time.monotonic() > deadline:
                    raise RuntimeError("webhook app did not start")
                time.sleep(0.01)
        return self.service

    async def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            assert self._thread is not None
            self._thread.join(timeout=10)
            self._server = None
        if self.service is not None:
            await self.service.stop()
            self.service = None

    async def restart(self) -> NotifierService:
        await self.stop()
        return await self.start()


def status_of(h: Harness, intervention_id: str) -> InterventionStatus:
    """The notifier's view of an intervention (which must exist)."""
    status = h.svc.status(intervention_id)
    assert status is not None, intervention_id
    return status


@pytest.fixture
async def harness(sink: TwilioSink, deployment: DeploymentConfig, db_url: str) -> AsyncIterator[Harness]:
    h = Harness(sink, deployment, db_url)
    await h.start()
    try:
        yield h
    finally:
        await h.stop()
