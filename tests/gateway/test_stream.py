"""The gateway on the real embedded broker: accepted means durable, 503 while it is down, the
case recorder and hold advisor follow the topics, banks get signed webhooks."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from atmguard.core.contracts import Actions, parse_event
from atmguard.core.settings import Settings
from atmguard.gateway.api.app import create_app
from atmguard.gateway.auth import verify
from atmguard.kafka.publisher import EventPublisher
from tests import factories
from tests.gateway.conftest import T0, bank_event, fact, serve, signed

pytestmark = pytest.mark.slow


async def topic_records(bootstrap: str, topic: str, expect: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Every record of `topic` (reads until `expect` records or the timeout)."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                                fetch_max_wait_ms=20, enable_auto_commit=False)
    await consumer.start()
    out: list[dict[str, Any]] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline and len(out) < expect:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                out.extend(json.loads(r.value) for r in records)
        # anything beyond `expect` (a duplicate) would arrive right behind
        for records in (await consumer.getmany(timeout_ms=300)).values():
            out.extend(json.loads(r.value) for r in records)
    finally:
        await consumer.stop()
    return out


class Stack:
    def __init__(self, app: Any, client: httpx.AsyncClient, key: str, publisher: EventPublisher, bootstrap: str):
        self.app, self.client, self.key, self.publisher, self.bootstrap = app, client, key, publisher, bootstrap

    async def post(self, payload: Any, bank: str = "halyk", key: str | None = None) -> httpx.Response:
        body, headers = signed(bank, key or self.key, payload)
        return await self.client.post("/v1/events", content=body, headers=headers)


@pytest.fixture
async def stack(settings: Settings, broker: Any) -> AsyncIterator[Stack]:
    publisher = EventPublisher(broker.bootstrap, settings, timeout=2.0)
    await publisher.start(strict=True)
    app = create_app(settings, publisher=publisher, bootstrap=broker.bootstrap)
    key = app.state.gateway.keys.add("halyk")
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gw"
    ) as client:
        yield Stack(app, client, key, publisher, broker.bootstrap)
    await publisher.stop()


async def test_accepted_events_are_in_the_broker_exactly_once(stack: Stack, settings: Settings) -> None:
    singles = [await stack.post(bank_event(i, atm=f"atm-zhez-00{1 + i % 7}")) for i in range(5)]
    batch = await stack.post([bank_event(i) for i in range(5, 25)])
    again = await stack.post(bank_event(3, atm="atm-zhez-004"))
    assert [r.status_code for r in singles] == [202] * 5
    assert batch.status_code == 202 and batch.json()["accepted"] == 20
    assert again.status_code == 202 and again.json() == singles[3].json()
    records = await topic_records(stack.bootstrap, settings.topic_bank, expect=25)
    assert sorted(r["id"] for r in records) == sorted(f"trx-{i}" for i in range(25))


async def test_broker_down_gives_503_and_nothing_accepted_is_lost(stack: Stack, settings: Settings, broker: Any) -> None:
    assert (await stack.post(bank_event(100))).status_code == 202
    broker.kill()
    r = await stack.post(bank_event(101))
    assert r.status_code == 503, r.text
    assert int(r.headers["Retry-After"]) >= 1
    assert "nothing was accepted" in r.json()["error"]
    broker.start()  # in-memory broker: a restart is a reset; the gateway reconnects by itself
    for _ in range(20):
        r = await stack.post(bank_event(101))
        if r.status_code == 202:
            break
        await asyncio.sleep(float(r.headers.get("Retry-After", "1")) / 4)
    assert r.status_code == 202, r.text
    records = await topic_records(stack.bootstrap, settings.topic_bank, expect=1)
    assert [rec["id"] for rec in records] == ["trx-101"]


async def test_interventions_on_the_topic_become_cases_and_advise_hold(stack: Stack, settings: Settings) -> None:
    # the facts the cameras sent, then the engine's intervention, arrive through the topics
    phone = parse_event(fact(1, atm="atm-zhez-003", duration=100, at=0))
    await stack.publisher.publish(phone)
    iv = factories.intervention(id="iv-topic-1", rule_version=3, atm_id="atm-zhez-003", ts=T0,
                                message="on the phone 100s at ATM", matched=[factories.matched("on_phone", phone)])
    await stack.publisher.publish(iv)
    cases = stack.app.state.gateway.cases
    for _ in range(100):
        if cases.summary("iv-topic-1"):
            break
        await asyncio.sleep(0.05)
    detail = cases.detail("iv-topic-1")
    assert detail is not None and detail["address"] == "ул. Абая, 41"
    assert any(t["kind"] == "fact" and t["matched"] for t in detail["timeline"])
    r = await stack.post(bank_event(200, atm="atm-zhez-003", amount=4_400_000, at=90))
    assert r.json()["advice"] == "hold" and r.json()["intervention_id"] == "iv-topic-1"


async def test_advisor_state_comes_from_the_facts_topic(stack: Stack) -> None:
    await stack.publisher.publish(parse_event(fact(7, atm="atm-zhez-006", duration=150, at=0)))
    advisor = stack.app.state.gateway.advisor
    for _ in range(100):  # wait for the follower to feed the fact
        if advisor._latest_ts is not None:
            break
        await asyncio.sleep(0.05)
    r = await stack.post(bank_event(300, atm="atm-zhez-006", amount=350_000, at=40))
    assert r.json()["advice"] == "hold", r.text


async def test_banks_get_signed_webhooks_when_an_intervention_opens_and_closes(stack: Stack, settings: Settings) -> None:
    received: list[tuple[dict[str, str], bytes]] = []

    async def hook(request: Request) -> Response:
        received.append((dict(request.headers), await request.body()))
        return Response(status_code=200 if len(received) > 1 else 500)  # the first attempt fails: retried

    receiver = Starlette(routes=[Route("/hook", hook, methods=["POST"])])
    gw = stack.app.state.gateway
    stack.app.state.webhooks.backoff_s = 0.05
    async with serve(receiver) as url:
        gw.keys.set_webhook("halyk", f"{url}/hook")
        assert (await stack.post(bank_event(400, atm="atm-zhez-005", amount=1000))).status_code == 202
        iv = factories.intervention(id="iv-hook-1", rule_version=3, atm_id="atm-zhez-005", ts=T0, evidence=["f-9"],
                                    actions=Actions(hold=True), message="coached caller")
        await stack.publisher.publish(iv)
        for _ in range(100):
            if len(received) >= 2:
                break
            await asyncio.sleep(0.05)
        headers, body = received[-1]
        verify([stack.key], headers["x-atmguard-timestamp"], headers["x-atmguard-signature"], body, skew_s=300)
        assert headers["x-atmguard-bank"] == "halyk"
        opened = json.loads(body)
        assert opened["event"] == "intervention.opened"
        assert opened["intervention"]["id"] == "iv-hook-1" and opened["intervention"]["hold"] is True
        gw.cases.close("iv-hook-1", "false_alarm", "dina")
        from atmguard.gateway.follower import notice

        stack.app.state.webhooks.notify({"halyk"}, "intervention.closed", notice(gw.cases.summary("iv-hook-1"), outcome="false_alarm"))
        for _ in range(100):
            if len(received) >= 3:
                break
            await asyncio.sleep(0.05)
        closed = json.loads(received[-1][1])
        assert closed["event"] == "intervention.closed" and closed["intervention"]["outcome"] == "false_alarm"


async def test_bank_events_other_producers_published_reach_the_advisor(settings: Settings, broker: Any) -> None:
    """Another gateway accepted the big transfer; this one learns it from the bank topic (read
    every `bank_follow_s`) and advises hold once the caller on the phone completes the rule."""
    from atmguard.core.settings import GatewaySettings

    publisher = EventPublisher(broker.bootstrap, settings, timeout=2.0)
    await publisher.start(strict=True)
    app = create_app(settings, publisher=publisher, bootstrap=broker.bootstrap, config=GatewaySettings(bank_follow_s=0.3))
    key = app.state.gateway.keys.add("halyk")
    try:
        async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gw"
        ) as client:
            stack = Stack(app, client, key, publisher, broker.bootstrap)
            await publisher.publish(parse_event(fact(11, atm="atm-zhez-007", duration=120, at=0)))
            await publisher.publish(parse_event(bank_event("elsewhere-1", atm="atm-zhez-007", amount=400_000, at=10)))
            answers = []
            for n in range(60):  # a small transfer: only the other gateway's event can make it "hold"
                r = await stack.post(bank_event(f"small-{n}", atm="atm-zhez-007", amount=5_000, at=20))
                answers.append(r.json()["advice"])
                if answers[-1] == "hold":
                    break
                await asyncio.sleep(0.1)
            assert answers[-1] == "hold", answers
            advice = r.json()
            assert advice["reason"].startswith("atm-zhez-007: on the phone 120s, transfer 400000")
    finally:
        await publisher.stop()
