"""Twilio webhooks over HTTP (status callbacks, inbound SMS acks, signatures), the ack API,
escalation on an injectable clock, and a restart in the middle of an escalation."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import func, select

from atmguard.notifier.models import Acknowledgement, Notification, NotifiedIntervention

from .conftest import Harness, make_iv, status_of

pytestmark = pytest.mark.timeout(60)


def _count_rows(h: Harness) -> tuple[int, int, int]:
    with h.svc.db.read() as s:
        return (
            s.scalar(select(func.count()).select_from(Notification)) or 0,
            s.scalar(select(func.count()).select_from(Acknowledgement)) or 0,
            s.scalar(select(func.count()).select_from(NotifiedIntervention).where(NotifiedIntervention.state == "acknowledged"))
            or 0,
        )


async def test_status_callbacks_record_delivery_and_call_outcome(harness: Harness, sink):
    iv = make_iv(sms=("dispatch",), radio=("dispatch",))
    await harness.svc.handle(iv)
    [msg], [call] = sink.messages, sink.calls
    assert sink.send_status(msg.sid or "", "sent").status_code == 204
    assert sink.send_status(msg.sid or "", "delivered").status_code == 204
    for status in ("initiated", "ringing", "in-progress"):
        assert sink.send_status(call.sid or "", status).status_code == 204
    views = {n.channel: n for n in status_of(harness, iv.id).notifications}
    assert views["sms"].state == "delivered" and views["sms"].delivered_at is not None
    assert views["radio"].state == "sent" and views["radio"].provider_status == "in-progress"
    assert sink.send_status(call.sid or "", "completed", duration_s=34).status_code == 204
    assert sink.send_status(msg.sid or "", "sent").status_code == 204  # late and out of order: ignored
    views = {n.channel: n for n in status_of(harness, iv.id).notifications}
    assert views["radio"].state == "delivered" and views["radio"].provider_status == "completed"
    assert views["sms"].provider_status == "delivered"


async def test_failed_sms_callback_falls_back_to_radio(harness: Harness, sink):
    iv = make_iv(sms=("dispatch",))
    await harness.svc.handle(iv)
    [msg] = sink.messages
    assert sink.send_status(msg.sid or "", "undelivered", error_code="30003").status_code == 204
    await harness.svc.run_due()
    notes = status_of(harness, iv.id).notifications
    assert notes[0].state == "dead" and notes[0].error == "Twilio reports undelivered (error 30003)"
    assert notes[1].channel == "radio" and notes[1].reason == "fallback" and notes[1].state == "sent"
    assert len(sink.calls) == 1


async def test_busy_radio_call_is_retried(harness: Harness, sink):
    iv = make_iv(sms=(), radio=("dispatch",))
    await harness.svc.handle(iv)
    sink.send_status(sink.calls[0].sid or "", "busy")
    [n] = status_of(harness, iv.id).notifications
    assert n.state == "retrying" and n.provider_status == "busy"
    harness.clock.advance(1.0)
    await harness.svc.run_due()
    assert len(sink.calls) == 2


async def test_bad_or_missing_signatures_get_403_and_change_nothing(harness: Harness, sink):
    iv = make_iv(sms=("patrol",))
    await harness.svc.handle(iv)
    msg = sink.messages[0]
    url = msg.status_callback or ""
    params = {"MessageSid": msg.sid or "", "MessageStatus": "failed", "AccountSid": sink.account_sid}
    before = _count_rows(harness)
    assert sink.post_signed(url, params, signature="bm90IGEgc2lnbmF0dXJl").status_code == 403
    assert sink.post_signed(url, params, signature="").status_code == 403
    forged = sink.sign(url, {**params, "MessageStatus": "delivered"})  # signed for other fields
    assert sink.post_signed(url, params, signature=forged).status_code == 403
    inbound = {"From": "+77015550101", "Body": f"OK {iv.short_code}", "MessageSid": "SM" + "0" * 32}
    assert sink.post_signed(sink.inbound_url or "", inbound, signature="").status_code == 403
    assert httpx.post(sink.inbound_url or "", data=inbound).status_code == 403
    assert _count_rows(harness) == before
    assert {n.state for n in status_of(harness, iv.id).notifications} == {"sent"}
    assert status_of(harness, iv.id).state == "open"


async def test_ack_by_sms_reply_stops_escalation(harness: Harness, sink):
    iv = make_iv(sms=("patrol",))
    await harness.svc.handle(iv)
    assert len(status_of(harness, iv.id).pending_escalations) == 2
    resp = sink.send_inbound_sms("+77015550102", f"ok {iv.short_code.lower()}")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("application/xml")
    assert f"Принято: {iv.short_code}, пр. Алашахана, 30" in resp.text and "<Message>" in resp.text
    status = status_of(harness, iv.id)
    assert status.state == "acknowledged" and status.acked_via == "sms"
    assert status.acked_by == "ofc-ivanova (+7701***0102)" and status.pending_escalations == []
    sent_before = len(sink.requests)
    harness.clock.advance(3600)
    assert await harness.svc.run_due() == 0
    assert len(sink.requests) == sent_before
    again = sink.send_inbound_sms("+77015550101", f"OK {iv.short_code}")  # a second officer, too late
    assert "басқа қызметкер қабылдап қойған" in again.text  # Kazakh reply: someone else took it


async def test_ack_replies_that_do_not_ack(harness: Harness, sink):
    iv = make_iv(sms=("patrol",))
    await harness.svc.handle(iv)
    assert "OK K7QD" in sink.send_inbound_sms("+77015550102", "что случилось?").text  # explains how
    assert "Нет открытой тревоги с кодом ZZZZ" in sink.send_inbound_sms("+77015550102", "OK ZZZZ").text
    stranger = sink.send_inbound_sms("+77019998877", f"OK {iv.short_code}")
    assert stranger.status_code == 200 and "<Message>" not in stranger.text
    assert status_of(harness, iv.id).state == "open"
    # a bare "1" from an officer with exactly one open alert acknowledges it
    assert "Принято" in sink.send_inbound_sms("+77015550102", "1").text
    assert status_of(harness, iv.id).state == "acknowledged"


async def test_ack_api_needs_a_token(harness: Harness, sink, monkeypatch):
    monkeypatch.setenv("ATMGUARD_NOTIFIER_API_TOKEN", "s3cret-token")
    await harness.stop()  # the token is read when the app is mounted: restart with it set
    await harness.start()
    iv = make_iv(sms=("dispatch",))
    await harness.svc.handle(iv)
    url = f"{harness.public_url}/v1/interventions/{iv.id}/ack"
    async with httpx.AsyncClient() as client:
        assert (await client.post(url, json={"by": "dispatcher-1"})).status_code == 403
        wrong = await client.post(url, json={"by": "x"}, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 403 and status_of(harness, iv.id).state == "open"
        auth = {"Authorization": "Bearer s3cret-token"}
        ok = await client.post(url, json={"by": "dispatcher-1", "via": "console"}, headers=auth)
        assert ok.status_code == 200 and ok.json() == {"intervention_id": iv.id, "acknowledged": True, "state": "acknowledged"}
        again = await client.post(url, json={"by": "dispatcher-2"}, headers=auth)
        assert again.json()["acknowledged"] is False
        missing = await client.post(f"{harness.public_url}/v1/interventions/iv-nope/ack", json={"by": "x"}, headers=auth)
        assert missing.status_code == 404
        notes = await client.get(f"{harness.public_url}/v1/interventions/{iv.id}/notifications", headers=auth)
        assert notes.json()["acked_by"] == "dispatcher-1" and notes.json()["notifications"][0]["to"] == "+7701***0200"


async def test_escalation_after_the_timeout(harness: Harness, sink):
    iv = make_iv(sms=("patrol",))
    await harness.svc.handle(iv)
    assert sorted(r.to or "" for r in sink.messages) == ["+77015550101", "+77015550102"]
    harness.clock.advance(119)
    assert await harness.svc.run_due() == 0
    harness.clock.advance(2)  # 2 min: neighbouring districts' patrol + the radio
    await harness.svc.run_due()
    assert sorted(r.to or "" for r in sink.messages[2:]) == ["+77015550104", "+77015550105"]
    assert [c.to for c in sink.calls] == ["+77102000911"]
    status = status_of(harness, iv.id)
    assert status.escalation_step == 1 and len(status.pending_escalations) == 1
    harness.clock.advance(180)  # 5 min: the duty supervisor (English)
    await harness.svc.run_due()
    assert sink.messages[-1].to == "+77015550300" and (sink.messages[-1].body or "").startswith("ATMGUARD 14:30 ATM")
    assert status_of(harness, iv.id).escalation_step == 2
    assert await harness.svc.acknowledge(iv.id, "sup-duty", "console") is True
    assert await harness.svc.acknowledge(iv.id, "sup-duty", "console") is False


async def test_ack_by_api_before_the_timeout_prevents_escalation(harness: Harness, sink):
    iv = make_iv(sms=("patrol",))
    await harness.svc.handle(iv)
    assert await harness.svc.acknowledge(iv.id, "dispatcher-1", "console") is True
    harness.clock.advance(600)
    await harness.svc.run_due()
    assert len(sink.requests) == 2 and status_of(harness, iv.id).escalation_step == 0
    assert await harness.svc.acknowledge("iv-unknown", "x", "api") is False


async def test_low_severity_does_not_escalate(harness: Harness, sink):
    iv = make_iv(severity="low", sms=("dispatch",))
    await harness.svc.handle(iv)
    harness.clock.advance(600)
    assert await harness.svc.run_due() == 0 and len(sink.requests) == 1


async def test_restart_mid_escalation_resumes_it(sink, deployment, any_db_url):
    h = Harness(sink, deployment, any_db_url, serve=False)
    await h.start()
    try:
        iv = make_iv(sms=("patrol",))
        await h.svc.handle(iv)
        h.clock.advance(125)
        await h.svc.run_due()  # step 1 done
        sink.fail_next(1, kind="message")
        other = make_iv(2, severity="low", sms=("dispatch",))
        await h.svc.handle(other)  # left retrying when the notifier goes down
        await h.stop()

        h.clock.advance(200)  # step 2 fell due while the notifier was down
        await h.start()
        await h.svc.handle(iv)  # redelivered after the restart: nothing sent again
        await h.svc.run_due()
        tos = [r.to for r in sink.messages]
        assert tos.count("+77015550300") == 1  # the supervisor, once
        assert tos.count("+77015550200") == 1  # the retried SMS went out after the restart
        assert status_of(h, iv.id).escalation_step == 2
        assert status_of(h, other.id).notifications[0].attempts == 2
        assert await h.svc.acknowledge(iv.id, "sup-duty", "console") is True
        h.clock.advance(3600)
        assert await h.svc.run_due() == 0
    finally:
        await h.stop()


async def test_duplicates_across_restart_on_each_database(sink, deployment, any_db_url):
    h = Harness(sink, deployment, any_db_url, serve=False)
    await h.start()
    try:
        ivs = [make_iv(i, sms=("dispatch",)) for i in range(3)]
        for iv in ivs:
            await h.svc.handle(iv)
        await h.restart()
        for iv in ivs:
            await h.svc.handle(iv)
        assert len(sink.messages) == 3
    finally:
        await h.stop()


async def test_metrics_count_sends_retries_escalations_and_acks(sink, deployment, db_url):
    from prometheus_client import CollectorRegistry

    from atmguard.notifier.metrics import NotifierMetrics

    registry = CollectorRegistry()
    h = Harness(sink, deployment, db_url, serve=False, metrics=NotifierMetrics.create(registry))
    await h.start()
    try:
        sink.fail_next(1, kind="message")
        iv = make_iv(sms=("dispatch",))
        await h.svc.handle(iv)
        h.clock.advance(121)
        await h.svc.run_due()
        await h.svc.acknowledge(iv.id, "dispatcher-1", "console")

        def value(name: str, **labels: str) -> float:
            return registry.get_sample_value(name, labels) or 0.0

        assert value("atmguard_notifier_retried_total", channel="sms") == 1
        assert value("atmguard_notifier_sent_total", channel="sms") == 3  # retried desk SMS + 2 reserve patrol
        assert value("atmguard_notifier_sent_total", channel="radio") == 1
        assert value("atmguard_notifier_escalations_total") == 1
        assert value("atmguard_notifier_ack_latency_seconds_count") == 1
        assert value("atmguard_notifier_ack_latency_seconds_sum") == pytest.approx(121.0)
        assert value("atmguard_notifier_interventions_total", mode="enforce", outcome="new") == 1
    finally:
        await h.stop()


async def test_reply_through_the_sinks_control_endpoint_as_the_readme_shows(harness: Harness, sink):
    iv = make_iv(sms=("patrol",))
    await harness.svc.handle(iv)
    sink.inbound_url = None  # as `atmguard up` starts it: found from the status callbacks
    sink.number = None
    async with httpx.AsyncClient() as client:
        listed = (await client.get(f"{sink.base_url}/_sink/requests")).json()
        assert {r["to"] for r in listed} == {"+77015550101", "+77015550102"}
        resp = await client.post(
            f"{sink.base_url}/_sink/inbound", data={"From": "+77015550101", "Body": f"OK {iv.short_code}"}, timeout=10
        )
    assert resp.status_code == 200 and resp.json()["forwarded_status"] == 200
    assert "Қабылданды" in resp.json()["response"]
    assert status_of(harness, iv.id).state == "acknowledged"
