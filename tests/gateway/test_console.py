"""The console over HTTP: log-in, sessions, CSRF, roles, case actions, the rule authors' view."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest

from atmguard.core.settings import Settings
from atmguard.gateway.api.app import create_app
from atmguard.gateway.users import add_user
from tests.gateway.conftest import RecordingPublisher
from tests.gateway.test_store import intervention


@pytest.fixture
async def app_client(settings: Settings) -> AsyncIterator[tuple[object, httpx.AsyncClient]]:
    app = create_app(settings, publisher=RecordingPublisher())
    sessions = app.state.gateway.sessions
    add_user(sessions, "dina", "dispatcher", "correct horse 1")
    add_user(sessions, "rafa", "rule_author", "correct horse 2")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
        yield app, client


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, "no CSRF token in the page"
    return m.group(1)


async def login(client: httpx.AsyncClient, name: str, password: str) -> httpx.Response:
    page = await client.get("/console/login")
    return await client.post("/console/login", data={"name": name, "password": password, "csrf": csrf_of(page.text), "next": "/console"})


async def test_visitor_not_logged_in_is_sent_to_the_login_page(app_client: tuple[object, httpx.AsyncClient]) -> None:
    _, client = app_client
    r = await client.get("/console")
    assert r.status_code == 303 and r.headers["location"].startswith("/console/login")
    assert (await client.get("/console/api/cases")).status_code == 401
    assert (await client.get("/console/events")).status_code == 401


async def test_login_wrong_password_then_right_then_logout(app_client: tuple[object, httpx.AsyncClient]) -> None:
    app, client = app_client
    r = await login(client, "dina", "wrong password")
    assert r.status_code == 401 and "Wrong name or password" in r.text
    r = await login(client, "dina", "correct horse 1")
    assert r.status_code == 303 and r.headers["location"] == "/console"
    page = await client.get("/console")
    assert page.status_code == 200 and "dina (dispatcher)" in page.text
    assert "/console/static/console.js" in page.text and "http" not in re.sub(r"http://gw", "", page.text.split("<body>")[0])
    r = await client.post("/console/logout", data={"csrf": csrf_of(page.text)})
    assert r.status_code == 303
    assert (await client.get("/console")).status_code == 303
    actions = [e["action"] for e in app.state.gateway.cases.audit_log()]  # type: ignore[attr-defined]
    assert [a for a in actions if a.startswith("user.l")] == ["user.login_failed", "user.login", "user.logout"]


async def test_login_form_without_csrf_token_is_refused(app_client: tuple[object, httpx.AsyncClient]) -> None:
    _, client = app_client
    await client.get("/console/login")
    r = await client.post("/console/login", data={"name": "dina", "password": "correct horse 1", "csrf": "forged"})
    assert r.status_code == 403
    assert (await client.get("/console")).status_code == 303


async def test_dispatcher_handles_a_case_and_csrf_is_required(app_client: tuple[object, httpx.AsyncClient]) -> None:
    app, client = app_client
    app.state.gateway.cases.record(intervention(1))  # type: ignore[attr-defined]
    await login(client, "dina", "correct horse 1")
    token = csrf_of((await client.get("/console")).text)
    listed = (await client.get("/console/api/cases")).json()
    assert [c["id"] for c in listed] == ["iv-0001"] and listed[0]["address"] == "пр. Алашахана, 30"
    r = await client.post("/console/api/cases/iv-0001/ack", json={})
    assert r.status_code == 403  # no CSRF header
    hdr = {"X-CSRF-Token": token}
    assert (await client.post("/console/api/cases/iv-0001/ack", json={}, headers=hdr)).json()["state"] == "acknowledged"
    assert (await client.post("/console/api/cases/iv-0001/assign", json={"assignee": "Sgt. Kim"}, headers=hdr)).json()["assigned_to"] == "Sgt. Kim"
    assert (await client.post("/console/api/cases/iv-0001/note", json={"text": "car 12 sent"}, headers=hdr)).status_code == 200
    bad = await client.post("/console/api/cases/iv-0001/close", json={"outcome": "solved"}, headers=hdr)
    assert bad.status_code == 400 and "outcome" in bad.json()["error"]
    done = await client.post("/console/api/cases/iv-0001/close", json={"outcome": "real_scam_stopped"}, headers=hdr)
    assert done.json()["state"] == "closed"
    detail = (await client.get("/console/api/cases/iv-0001")).json()
    assert [t["kind"] for t in detail["timeline"]][-4:] == ["ack", "assign", "note", "close"]


async def test_rule_author_reads_rules_and_counts_but_cannot_change_cases(app_client: tuple[object, httpx.AsyncClient]) -> None:
    app, client = app_client
    app.state.gateway.cases.record(intervention(2))  # type: ignore[attr-defined]
    await login(client, "rafa", "correct horse 2")
    page = await client.get("/console")
    assert "Read-only" in page.text
    r = await client.post("/console/api/cases/iv-0002/ack", json={}, headers={"X-CSRF-Token": csrf_of(page.text)})
    assert r.status_code == 403
    rules = await client.get("/console/rules")
    assert rules.status_code == 200
    assert "coached-transfer" in rules.text
    # the current rule pack (v3, no firings yet) and the version that fired (v2, retired)
    assert re.search(r"<td>3</td>", rules.text) and "2 (retired)" in rules.text
