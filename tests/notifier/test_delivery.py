"""Interventions -> SMS and radio calls through the real twilio SDK to the local sink:
exact requests, routing, dedupe, shadow mode, retries, timeouts, fallback, dead letters."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from atmguard.notifier.config import DeploymentConfig

from .conftest import NIGHT, Harness, deployment_with, make_iv, status_of

pytestmark = pytest.mark.timeout(60)


async def test_sms_requests_are_exactly_what_twilio_would_get(harness: Harness, sink, deployment):
    iv = make_iv(sms=("patrol",), radio=("dispatch",))
    await harness.svc.handle(iv)
    sms = sorted(sink.messages, key=lambda r: r.to or "")
    assert [r.to for r in sms] == ["+77015550101", "+77015550102"]  # center district, day shift
    for req in sms:
        assert req.path == f"/2010-04-01/Accounts/{sink.account_sid}/Messages.json"
        assert set(req.params) == {"To", "From", "Body", "StatusCallback"}
        assert req.from_ == "+77102000100"
        assert re.fullmatch(rf"{harness.public_url}/twilio/status/\d+", req.status_callback or "")
        assert f"{harness.public_url}/console/interventions/{iv.id}" in (req.body or "")
        assert f"OK {iv.short_code}" in (req.body or "")
    assert "сөйлесіп тұр" in (sms[0].body or "")  # ofc-nurlanov reads Kazakh
    assert "Говорит по телефону" in (sms[1].body or "")  # ofc-ivanova reads Russian
    [call] = sink.calls
    assert call.path.endswith("/Calls.json") and call.to == "+77102000911" and call.from_ == "+77102000100"
    assert call.twiml is not None and call.twiml.count("<Say language=\"ru-RU\" voice=\"Polly.Tatyana\">") == 2
    assert call.params["StatusCallbackEvent"] == ["initiated", "ringing", "answered", "completed"]
    status = status_of(harness, iv.id)
    assert status is not None and status.state == "open"
    assert {n.state for n in status.notifications} == {"sent"}
    assert all(n.twilio_sid and n.twilio_sid.startswith(("SM", "CA")) for n in status.notifications)
    assert "+7701***0101" in {n.to for n in status.notifications}  # masked in the console view


async def test_routing_follows_atm_district_and_shift(harness: Harness, sink):
    await harness.svc.handle(make_iv(1, atm_id="atm-zhez-004"))  # north, day
    await harness.svc.handle(make_iv(2, atm_id="atm-zhez-004", ts=NIGHT))  # north, night
    await harness.svc.handle(make_iv(3, atm_id="atm-zhez-007", ts=NIGHT))  # kengir, any shift
    assert [r.to for r in sink.messages] == ["+77015550104", "+77015550103", "+77015550106"]
    night = sink.messages[1].body or ""
    assert night.startswith("ATMGUARD 22:30 банкомат ул. Гагарина, 7.")


async def test_duplicate_interventions_are_sent_once(harness: Harness, sink):
    iv = make_iv(sms=("dispatch",))
    await asyncio.gather(*(harness.svc.handle(iv) for _ in range(5)))
    await harness.svc.handle(iv.model_copy())
    await harness.restart()
    await harness.svc.handle(iv)  # after a restart, too
    assert len(sink.messages) == 1


async def test_shadow_interventions_notify_nobody(harness: Harness, sink):
    iv = make_iv(mode="shadow", sms=("patrol",), radio=("dispatch",))
    await harness.svc.handle(iv)
    harness.clock.advance(600)
    await harness.svc.run_due()
    assert sink.requests == []
    status = status_of(harness, iv.id)
    assert status is not None and status.state == "shadow" and status.notifications == []


async def test_500s_are_retried_with_backoff(harness: Harness, sink):
    sink.fail_next(2, kind="message")
    iv = make_iv(sms=("dispatch",))
    await harness.svc.handle(iv)
    [n] = status_of(harness, iv.id).notifications
    assert n.state == "retrying" and n.attempts == 1 and "HTTP 500" in (n.error or "")
    harness.clock.advance(0.5)
    assert await harness.svc.run_due() == 0  # backoff 1 s not over yet
    harness.clock.advance(0.6)
    await harness.svc.run_due()  # second attempt: 500 again, next in 2 s
    harness.clock.advance(1.9)
    assert await harness.svc.run_due() == 0
    harness.clock.advance(0.2)
    await harness.svc.run_due()
    [n] = status_of(harness, iv.id).notifications
    assert n.state == "sent" and n.attempts == 3 and n.error is None
    assert [r.status_code for r in sink.requests] == [500, 500, 201]
    assert len(sink.messages) == 1


async def test_timeouts_are_retried(sink, db_url):
    config = deployment_with(**{"request_timeout_s: 10s": "request_timeout_s: 300ms"})
    h = Harness(sink, config, db_url, serve=False)
    await h.start()
    try:
        sink.delay_next(1, seconds=1.0, kind="message")
        iv = make_iv(sms=("dispatch",))
        await h.svc.handle(iv)
        [n] = status_of(h, iv.id).notifications
        assert n.state == "retrying" and "timed out" in (n.error or "")
        h.clock.advance(1.0)
        await h.svc.run_due()
        [n] = status_of(h, iv.id).notifications
        assert n.state == "sent" and n.attempts == 2
        assert [r.fault for r in sink.requests] == ["timeout", None]
    finally:
        await h.stop()


async def test_after_the_last_retry_the_radio_is_called_instead(harness: Harness, sink, deployment: DeploymentConfig):
    sink.fail_next(10, kind="message")
    iv = make_iv(sms=("dispatch",))
    await harness.svc.handle(iv)
    for _ in range(deployment.delivery.max_attempts):
        harness.clock.advance(10)
        await harness.svc.run_due()
    status = status_of(harness, iv.id)
    sms = [n for n in status.notifications if n.channel == "sms"]
    radio = [n for n in status.notifications if n.channel == "radio"]
    assert sms[0].state == "dead" and sms[0].attempts == deployment.delivery.max_attempts
    assert "HTTP 500" in (sms[0].error or "")
    assert radio and radio[0].reason == "fallback" and radio[0].state == "sent"
    assert [c.to for c in sink.calls] == ["+77102000911"]
    assert status.state == "open"


async def test_rejected_request_is_not_retried_and_falls_back(harness: Harness, sink):
    sink.fail_next(1, status=400, kind="message")
    iv = make_iv(sms=("dispatch",))
    await harness.svc.handle(iv)
    status = status_of(harness, iv.id)
    [sms] = [n for n in status.notifications if n.channel == "sms"]
    assert sms.state == "dead" and sms.attempts == 1 and "HTTP 400" in (sms.error or "")
    assert len(sink.calls) == 1  # the fallback radio call went out at once


async def test_when_every_channel_fails_the_intervention_is_visible_as_undelivered(harness: Harness, sink):
    sink.fail_next(100, status=400)
    iv = make_iv(sms=("dispatch",), radio=("dispatch",))
    await harness.svc.handle(iv)
    status = status_of(harness, iv.id)
    assert status.state == "undelivered"
    assert status.notifications and all(n.state == "dead" and n.error for n in status.notifications)
    assert {n.reason for n in status.notifications} == {"initial", "fallback"}


async def test_unknown_action_name_is_a_visible_dead_letter(harness: Harness, sink):
    iv = make_iv(sms=("patrl",))
    await harness.svc.handle(iv)
    [n] = status_of(harness, iv.id).notifications
    assert n.state == "dead" and "unknown recipient group 'patrl'" in (n.error or "")
    assert status_of(harness, iv.id).state == "undelivered" and sink.requests == []


class Cad:
    """A computer-aided-dispatch receiver: records posts, answers with the queued statuses."""

    def __init__(self, answers: list[int]) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.answers = answers
        cad = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                cad.received.append((dict(self.headers.items()), body))
                self.send_response(cad.answers.pop(0) if cad.answers else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/cad"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
async def cad_harness(sink, db_url):
    cad = Cad([503])
    config = deployment_with(**{"http://127.0.0.1:9911/atmguard/interventions": cad.url})
    h = Harness(sink, config, db_url, serve=False, environ={"ATMGUARD_WEBHOOK_CAD_SECRET": "cad-secret"})
    await h.start()
    try:
        yield h, cad
    finally:
        await h.stop()
        cad.close()


async def test_signed_webhook_to_cad_with_retry(cad_harness):
    from atmguard.notifier.webhook import verify

    h, cad = cad_harness
    iv = make_iv(sms=(), webhook=("cad",))
    await h.svc.handle(iv)
    h.clock.advance(1.0)
    await h.svc.run_due()
    [n] = status_of(h, iv.id).notifications
    assert n.state == "delivered" and n.attempts == 2
    assert len(cad.received) == 2
    headers, body = cad.received[1]
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Atmguard-Signature"].startswith("sha256=")
    assert verify("cad-secret", headers["X-Atmguard-Timestamp"], body, headers["X-Atmguard-Signature"])
    assert not verify("wrong", headers["X-Atmguard-Timestamp"], body, headers["X-Atmguard-Signature"])
    doc = json.loads(body)
    assert doc["intervention"]["id"] == iv.id and doc["atm"]["address"] == "пр. Алашахана, 30"
    assert doc["short_code"] == iv.short_code and doc["console_url"].endswith(f"/console/interventions/{iv.id}")


async def test_ack_cancels_pending_alerts_but_cad_still_gets_its_record(cad_harness, sink):
    h, cad = cad_harness
    sink.fail_next(1, kind="message")
    iv = make_iv(sms=("dispatch",), webhook=("cad",))
    await h.svc.handle(iv)
    assert await h.svc.acknowledge(iv.id, "dispatcher-1", "console") is True
    h.clock.advance(10)
    await h.svc.run_due()
    views = {n.channel: n for n in status_of(h, iv.id).notifications}
    assert views["sms"].state == "cancelled" and views["sms"].error == "acknowledged"
    assert views["webhook"].state == "delivered" and len(cad.received) == 2
    assert sink.messages == []


def test_sink_checks_credentials_like_twilio(sink):
    import httpx

    resp = httpx.post(f"{sink.base_url}/2010-04-01/Accounts/{sink.account_sid}/Messages.json", data={"To": "+77015550101"})
    assert resp.status_code == 401 and resp.json()["code"] == 20003
    assert sink.requests == []
