"""POST /v1/events over HTTP (ASGI): signing, validation, limits, idempotency, hold advice."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from atmguard.core.contracts import Actions, parse_event
from atmguard.core.settings import GatewaySettings, Settings
from atmguard.gateway.api.app import create_app
from atmguard.gateway.keys import BankKeys
from tests import factories
from tests.gateway.conftest import T0, RecordingPublisher, bank_event, fact, signed


@dataclass
class Gw:
    app: Any
    client: httpx.AsyncClient
    key: str
    keys: BankKeys
    publisher: RecordingPublisher

    async def post(self, payload: Any, *, bank: str = "halyk", key: str | None = None, **kw: Any) -> httpx.Response:
        body, headers = signed(bank, key or self.key, payload, **kw)
        return await self.client.post("/v1/events", content=body, headers=headers)


async def make_gw(settings: Settings, config: GatewaySettings | None = None) -> tuple[Gw, httpx.AsyncClient]:
    publisher = RecordingPublisher()
    app = create_app(settings, publisher=publisher, config=config)
    keys: BankKeys = app.state.gateway.keys
    key = keys.add("halyk")
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")
    return Gw(app, client, key, keys, publisher), client


@pytest.fixture
async def gw(settings: Settings) -> AsyncIterator[Gw]:
    g, client = await make_gw(settings)
    async with client:
        yield g


def receipts(gw: Gw) -> int:
    from sqlalchemy import func, select

    from atmguard.store.cases import BankReceipt

    with gw.app.state.gateway.sessions() as s:
        return int(s.scalar(select(func.count()).select_from(BankReceipt)) or 0)


async def test_signed_event_is_accepted_with_allow_advice(gw: Gw) -> None:
    r = await gw.post(bank_event(1))
    assert r.status_code == 202, r.text
    assert r.json() == {"event_id": "trx-1", "status": "accepted", "advice": "allow"}
    assert [e.id for e in gw.publisher.events] == ["trx-1"]


@pytest.mark.parametrize(
    "case",
    ["bad_signature", "stale_timestamp", "future_timestamp", "unknown_bank", "bank_mismatch", "missing_headers", "not_hex"],
)
async def test_auth_failures_are_401_and_record_nothing(gw: Gw, case: str) -> None:
    payload = bank_event(2)
    if case == "bad_signature":
        r = await gw.post(payload, key="0" * 64)
    elif case == "stale_timestamp":
        r = await gw.post(payload, now=time.time() - 301)
    elif case == "future_timestamp":
        r = await gw.post(payload, now=time.time() + 400)
    elif case == "unknown_bank":
        r = await gw.post(bank_event(2, bank="kaspi"), bank="kaspi")
    elif case == "bank_mismatch":
        gw.keys.add("kaspi")
        r = await gw.post(payload, bank="kaspi", key=gw.keys.current_key("kaspi"))
    elif case == "missing_headers":
        r = await gw.client.post("/v1/events", json=payload)
    else:
        body, headers = signed("halyk", gw.key, payload)
        headers["X-Atmguard-Signature"] = "md5=abc"
        r = await gw.client.post("/v1/events", content=body, headers=headers)
    assert r.status_code == 401, r.text
    assert r.json()["error"]
    assert gw.publisher.events == []
    assert receipts(gw) == 0


async def test_timestamp_within_five_minutes_is_fine(gw: Gw) -> None:
    assert (await gw.post(bank_event(3), now=time.time() - 290)).status_code == 202


@pytest.mark.parametrize(
    ("payload", "status", "field"),
    [
        (b"{not json", 400, None),
        ({**bank_event(4), "amount": -5}, 422, "amount"),
        ({**bank_event(4), "currency": "kzt"}, 422, "currency"),
        ({k: v for k, v in bank_event(4).items() if k != "ts"}, 422, "ts"),
        ({**bank_event(4), "ts": "2026-02-14T10:00:00"}, 422, "ts"),
        ({**bank_event(4), "type": "behavior"}, 422, "type"),
        ({**bank_event(4), "type": "teleport"}, 422, "type"),
        ([bank_event(5), {**bank_event(6), "status": "maybe"}], 422, "[1].status"),
        ({"events": [bank_event(5), {**bank_event(6), "amount": "lots"}]}, 422, "events[1].amount"),
        ({"events": []}, 422, "events"),
        ([bank_event(i) for i in range(501)], 422, None),
        (["a string"], 422, "[0]"),
        (42, 422, None),
    ],
)
async def test_invalid_bodies_get_4xx_naming_the_field(gw: Gw, payload: Any, status: int, field: str | None) -> None:
    r = await gw.post(payload)
    assert r.status_code == status, r.text
    assert r.json()["field"] == field
    assert gw.publisher.events == []


async def test_body_larger_than_the_limit_is_413(settings: Settings) -> None:
    g, client = await make_gw(settings, GatewaySettings(max_body_bytes=4096))
    async with client:
        r = await g.post([bank_event(i) for i in range(40)])
        assert r.status_code == 413
        assert "4096" in r.json()["error"]
        assert g.publisher.events == []


async def test_rate_limit_per_bank_is_429_with_retry_after(settings: Settings) -> None:
    g, client = await make_gw(settings, GatewaySettings(rate_per_s=0.5, rate_burst=2))
    other = g.keys.add("kaspi")
    async with client:
        assert (await g.post(bank_event(1))).status_code == 202
        assert (await g.post(bank_event(2))).status_code == 202
        r = await g.post(bank_event(3))
        assert r.status_code == 429
        assert int(r.headers["Retry-After"]) >= 1
        # another bank has its own budget
        assert (await g.post(bank_event(9, bank="kaspi"), bank="kaspi", key=other)).status_code == 202


async def test_same_event_id_twice_gets_the_same_answer_and_is_published_once(gw: Gw) -> None:
    first = await gw.post(bank_event(7))
    again = await gw.post(bank_event(7))
    assert first.status_code == again.status_code == 202
    assert first.json() == again.json()
    assert [e.id for e in gw.publisher.events] == ["trx-7"]


async def test_idempotency_survives_a_gateway_restart(settings: Settings) -> None:
    g1, c1 = await make_gw(settings)
    async with g1.app.router.lifespan_context(g1.app), c1:  # a clean stop flushes the receipts
        await g1.post(bank_event(8))
    publisher = RecordingPublisher()
    app2 = create_app(settings, publisher=publisher)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app2), base_url="http://gw") as c2:
        body, headers = signed("halyk", g1.key, bank_event(8))
        r = await c2.post("/v1/events", content=body, headers=headers)
    assert r.status_code == 202 and r.json()["event_id"] == "trx-8"
    assert publisher.events == []


async def test_batch_is_answered_in_order_and_duplicates_inside_it_published_once(gw: Gw) -> None:
    r = await gw.post({"events": [bank_event(10), bank_event(11, atm=None), bank_event(10)]})
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["accepted"] == 3
    assert [a["event_id"] for a in body["results"]] == ["trx-10", "trx-11", "trx-10"]
    assert sorted(e.id for e in gw.publisher.events) == ["trx-10", "trx-11"]
    r2 = await gw.post([bank_event(11, atm=None), bank_event(12)])
    assert [a["event_id"] for a in r2.json()["results"]] == ["trx-11", "trx-12"]
    assert sorted(e.id for e in gw.publisher.events) == ["trx-10", "trx-11", "trx-12"]


async def test_broker_down_is_503_with_retry_after_and_the_retry_is_accepted(gw: Gw) -> None:
    gw.publisher.down = True
    r = await gw.post(bank_event(20))
    assert r.status_code == 503
    assert r.headers["Retry-After"] == "3"
    assert receipts(gw) == 0
    gw.publisher.down = False
    r = await gw.post(bank_event(20))
    assert r.status_code == 202
    assert [e.id for e in gw.publisher.events] == ["trx-20"]


async def test_rotated_keys_both_work_until_the_old_is_revoked(gw: Gw) -> None:
    new = gw.keys.rotate("halyk")
    assert (await gw.post(bank_event(30), key=gw.key)).status_code == 202
    assert (await gw.post(bank_event(31), key=new)).status_code == 202
    gw.keys.revoke_old("halyk")
    assert (await gw.post(bank_event(32), key=gw.key)).status_code == 401
    assert (await gw.post(bank_event(33), key=new)).status_code == 202


async def test_hold_when_a_rule_fires_on_this_very_event(gw: Gw) -> None:
    advisor = gw.app.state.gateway.advisor
    assert advisor.engine is not None, "the real RuleEngine should be loaded from the rules dir"
    advisor.on_event(parse_event(fact(1, duration=120, at=0)))
    r = await gw.post(bank_event(40, amount=400000, at=30))
    assert r.status_code == 202
    body = r.json()
    assert body["advice"] == "hold"
    assert body["intervention_id"].startswith("iv-")
    assert "400000" in body["reason"]
    # the next operation at that ATM gets hold from the open intervention
    r2 = await gw.post(bank_event(41, amount=4_400_000, at=60))
    assert r2.json()["advice"] == "hold"
    assert r2.json()["intervention_id"] == body["intervention_id"]
    # another ATM is not affected
    r3 = await gw.post(bank_event(42, atm="atm-zhez-004", amount=400000, at=60))
    assert r3.json() == {"event_id": "trx-42", "status": "accepted", "advice": "allow"}


async def test_small_transfer_while_on_phone_is_allowed(gw: Gw) -> None:
    gw.app.state.gateway.advisor.on_event(parse_event(fact(2, duration=120)))
    r = await gw.post(bank_event(43, amount=5000, at=10))
    assert r.json()["advice"] == "allow"


async def test_hold_from_an_open_intervention_on_the_topic_until_closed(gw: Gw) -> None:
    advisor = gw.app.state.gateway.advisor
    iv = factories.intervention(id="iv-open-1", rule="r", severity="high", atm_id="atm-zhez-002", ts=T0, evidence=["x"],
                                actions=Actions(hold=True), message="coached caller at ATM")
    advisor.on_intervention(iv)
    r = await gw.post(bank_event(50, atm="atm-zhez-002"))
    assert r.json() == {"event_id": "trx-50", "status": "accepted", "advice": "hold",
                        "intervention_id": "iv-open-1", "reason": "coached caller at ATM"}
    advisor.on_closed("iv-open-1")
    assert (await gw.post(bank_event(51, atm="atm-zhez-002"))).json()["advice"] == "allow"


async def test_openapi_document_and_docs(gw: Gw) -> None:
    doc = (await gw.client.get("/openapi.json")).json()
    op = doc["paths"]["/v1/events"]["post"]
    assert {p["name"] for p in op["parameters"]} == {"X-Atmguard-Bank", "X-Atmguard-Timestamp", "X-Atmguard-Signature"}
    schemas = op["requestBody"]["content"]["application/json"]["schema"]["oneOf"]
    assert schemas[1]["maxItems"] == 500
    assert {"202", "401", "422", "429", "503"} <= set(op["responses"])
    docs = await gw.client.get("/docs")
    assert docs.status_code == 200 and "/docs-static/swagger-ui-bundle.js" in docs.text
    assert "cdn" not in docs.text.lower()
    js = await gw.client.get("/docs-static/swagger-ui-bundle.js")
    assert js.status_code == 200 and len(js.content) > 100_000
    redoc = await gw.client.get("/redoc")
    assert redoc.status_code == 200 and "fonts.googleapis" not in redoc.text
    assert json.dumps(doc)  # serialisable


async def test_gateway_on_sqlite_and_postgresql_keeps_answers_across_restarts(settings: Settings, db_url: str) -> None:
    publisher = RecordingPublisher()
    app = create_app(settings, publisher=publisher, database_url=db_url)
    key = app.state.gateway.keys.add("halyk")
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
        body, headers = signed("halyk", key, [bank_event(60), bank_event(61, atm=None)])
        first = await c.post("/v1/events", content=body, headers=headers)
    assert first.status_code == 202
    app2 = create_app(settings, publisher=publisher, database_url=db_url)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app2), base_url="http://gw") as c2:
        body, headers = signed("halyk", key, bank_event(61, atm=None))
        again = await c2.post("/v1/events", content=body, headers=headers)
    assert again.json() == first.json()["results"][1]
    assert sorted(e.id for e in publisher.events) == ["trx-60", "trx-61"]
