"""The console and the notifier's own tables: deliveries in the timeline, SMS-reply acks, console acks."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from atmguard.core.settings import Settings
from atmguard.gateway.api.app import _notifier_changed, create_app
from atmguard.gateway.users import add_user
from atmguard.notifier.api import API_TOKEN_ENV
from atmguard.notifier.config import load_deployment
from atmguard.notifier.models import Acknowledgement, Notification, NotifiedIntervention
from atmguard.notifier.service import NotifierService
from tests.gateway.conftest import RecordingPublisher
from tests.gateway.test_console import csrf_of, login
from tests.gateway.test_store import intervention

NOW = datetime(2026, 2, 14, 5, 2, 30, tzinfo=UTC)


class AckRecorder:
    """Records what the console asks of the notifier (NotifierService.acknowledge's signature)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []

    async def acknowledge(self, intervention_id: str, by: str, via: str) -> bool:
        self.calls.append((intervention_id, by, via))
        return True


def _notifier_rows(app: Any, iv_id: str, *, acked_by: str | None = None) -> None:
    with app.state.gateway.sessions.begin() as s:
        s.add(NotifiedIntervention(id=iv_id, atm_id="atm-zhez-001", rule="coached-transfer", severity="critical", mode="enforce",
                                   short_code="K7QX", state="acknowledged" if acked_by else "open", payload="{}", received_at=NOW,
                                   escalation_step=0))
        s.flush()
        s.add(Notification(intervention_id=iv_id, channel="sms", target="patrol", recipient="ofc-ivanova", address="+77015550102",
                           address_masked="+7701*****02", language="ru", reason="initial", body="...", state="delivered",
                           attempts=1, created_at=NOW, sent_at=NOW, updated_at=NOW))
        if acked_by:
            s.add(Acknowledgement(intervention_id=iv_id, by=acked_by, via="sms", at=NOW, latency_s=40.0))


async def test_sms_reply_ack_reaches_the_case_and_deliveries_show_in_the_timeline(settings: Settings) -> None:
    app = create_app(settings, publisher=RecordingPublisher())
    cases = app.state.gateway.cases
    cases.record(intervention(1))
    _notifier_rows(app, "iv-0001", acked_by="ofc-ivanova")
    _notifier_changed(cases, "iv-0001")
    detail = cases.detail("iv-0001")
    assert detail["state"] == "acknowledged" and detail["acknowledged_by"] == "ofc-ivanova"
    texts = [t["text"] for t in detail["timeline"]]
    assert "sms to ofc-ivanova (+7701*****02): delivered" in texts
    assert "acknowledged by ofc-ivanova via sms" in texts
    assert "+77015550102" not in str(detail)  # only the masked number reaches the console


async def test_console_ack_stops_the_notifiers_escalation(settings: Settings) -> None:
    notifier = AckRecorder()
    app = create_app(settings, publisher=RecordingPublisher(), notifier=notifier)
    app.state.gateway.cases.record(intervention(2))
    add_user(app.state.gateway.sessions, "dina", "dispatcher", "correct horse 1")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
        await login(client, "dina", "correct horse 1")
        token = csrf_of((await client.get("/console")).text)
        r = await client.post("/console/api/cases/iv-0002/ack", json={}, headers={"X-CSRF-Token": token})
    assert r.status_code == 200
    assert notifier.calls == [("iv-0002", "dina", "console")]


async def test_a_real_notifier_gets_its_webhooks_and_ack_api_served_by_the_gateway(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(API_TOKEN_ENV, "s3cret-token")
    twilio_settings = settings.model_copy(update={"twilio_base_url": "http://127.0.0.1:9"})
    service = NotifierService(twilio_settings, load_deployment(settings.config_dir), f"sqlite:///{tmp_path / 'n.db'}", tick_s=None)
    service.open()
    try:
        app = create_app(settings, publisher=RecordingPublisher(), notifier=service)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
            unsigned = await client.post("/twilio/sms", data={"From": "+77015550101", "Body": "OK K7QX"})
            ack = await client.post("/v1/interventions/iv-nope/ack", json={"by": "x"}, headers={"Authorization": "Bearer s3cret-token"})
        # The gateway's own error shape, and a notifier that really looked the intervention up.
        assert unsigned.status_code == 403 and unsigned.json() == {"error": "invalid X-Twilio-Signature", "field": None}
        assert ack.status_code == 404 and ack.json()["error"] == "unknown intervention"
    finally:
        await service.stop()
    # A stand-in that only acknowledges (as in the console tests) gets no notifier endpoints.
    bare = create_app(settings, publisher=RecordingPublisher(), notifier=AckRecorder())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=bare), base_url="http://gw") as client:
        assert (await client.post("/twilio/sms", data={})).status_code == 404


async def test_snapshots_are_served_to_logged_in_users_only_and_never_outside_their_folder(settings: Settings) -> None:
    from atmguard.core.settings import GatewaySettings

    camera_dir = settings.data_dir.parent / "camera-snapshots"
    app = create_app(settings, publisher=RecordingPublisher(), config=GatewaySettings(snapshot_dirs=[camera_dir]))
    snap = camera_dir / "atm-zhez-001" / "f-1.jpg"  # as the detectors write it: <dir>/<atm_id>/<fact id>.jpg
    snap.parent.mkdir(parents=True)
    snap.write_bytes(b"\xff\xd8\xff fake jpeg")
    add_user(app.state.gateway.sessions, "dina", "dispatcher", "correct horse 1")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
        assert (await client.get("/console/snapshot", params={"ref": str(snap)})).status_code == 401
        await login(client, "dina", "correct horse 1")
        for ref in (str(snap), "atm-zhez-001/f-1.jpg"):  # absolute, as facts carry it, or relative to the folder
            r = await client.get("/console/snapshot", params={"ref": ref})
            assert r.status_code == 200 and r.content.startswith(b"\xff\xd8")
        for ref in ("../data/secrets/bank-keys.secret", str(settings.data_dir / "secrets" / "bank-keys.secret"), "/etc/passwd"):
            assert (await client.get("/console/snapshot", params={"ref": ref})).status_code == 404
