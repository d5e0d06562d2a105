"""Gateway fixtures: settings in a temp data dir, case store URLs (SQLite and PostgreSQL), signed
requests, a recording publisher, the real embedded broker, and a real uvicorn server on port 0."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from atmguard.core.contracts import Behavior
from atmguard.core.settings import Settings
from atmguard.gateway.auth import sign_headers
from tests import factories
from tests.conftest import REPO
from tests.factories import HOLD_TRANSFER, RECENT, payload, write_rule_pack

T0 = RECENT


def pg_url_base() -> str | None:
    return os.environ.get("ATMGUARD_TEST_POSTGRES_URL")


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    base = pg_url_base()
    assert base
    name = f"atmguard_gw_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The case store on SQLite, and on PostgreSQL when ATMGUARD_TEST_POSTGRES_URL is set."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'cases.db'}"
        return
    if not pg_url_base():
        pytest.skip("set ATMGUARD_TEST_POSTGRES_URL (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test) to test PostgreSQL")
    with postgres_database() as url:
        yield url


@pytest.fixture
def rules_dir(tmp_path: Path) -> Path:
    """A rules folder with the hold rule, in `rule_file(rules_dir, HOLD_TRANSFER)`."""
    return write_rule_pack(tmp_path / "rules", HOLD_TRANSFER)


@pytest.fixture
def settings(tmp_path: Path, rules_dir: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        config_dir=REPO / "configs",
        rules_dir=rules_dir,
        topic_facts=f"t{uuid.uuid4().hex[:6]}.facts",
        topic_bank=f"t{uuid.uuid4().hex[:6]}.bank",
        topic_interventions=f"t{uuid.uuid4().hex[:6]}.interventions",
        partitions=2,
    )


class RecordingPublisher:
    """In-process stand-in for unit tests of the HTTP layer: records what it would publish."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.down = False

    async def publish(self, event: Any) -> None:
        if self.down:
            from atmguard.kafka.publisher import BrokerUnavailable

            raise BrokerUnavailable("test: broker down", retry_after=3)
        self.events.append(event)


def bank_event(n: int | str, *, bank: str = "halyk", atm: str | None = "atm-zhez-001", amount: float = 1000,
               at: float = 0, **extra: Any) -> dict[str, Any]:
    """The JSON a bank posts for transfer `trx-{n}`, `at` seconds after T0; `extra` replaces fields as sent."""
    event = factories.bank_event(id=f"trx-{n}", bank_id=bank, atm_id=atm, amount=amount, ts=T0 + timedelta(seconds=at))
    return payload(event, **extra)


def fact(n: int | str, *, atm: str = "atm-zhez-001", behavior: Behavior = "on_phone", duration: float = 90, at: float = 0,
         **extra: Any) -> dict[str, Any]:
    """The JSON of behaviour fact `f-{n}`, begun at T0 and seen `at` seconds later."""
    event = factories.fact(behavior, id=f"f-{n}", atm_id=atm, ts=T0 + timedelta(seconds=at), started_at=T0,
                           duration_s=duration, **extra)
    return payload(event)


def signed(bank: str, key: str, payload: Any, *, now: float | None = None) -> tuple[bytes, dict[str, str]]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return body, {"Content-Type": "application/json", **sign_headers(bank, key, body, now=now)}


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Any]:
    """The real embedded broker (Tansu) on a free port."""
    from atmguard.kafka.broker import EmbeddedBroker

    with EmbeddedBroker(port=0, data_dir=tmp_path / "broker") as b:
        yield b


@contextlib.asynccontextmanager
async def serve(app: Any) -> AsyncIterator[str]:
    """Run `app` with uvicorn on a free port in this event loop; yields its base URL."""
    import uvicorn

    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started:
            break
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(task, 10)
