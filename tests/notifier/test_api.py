"""The notifier's routers are shared module objects: each app must answer with its own service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from twilio.request_validator import RequestValidator

from atmguard.core.settings import Settings
from atmguard.notifier.api import include_notifier, twilio_router
from atmguard.notifier.config import DeploymentConfig
from atmguard.notifier.service import NotifierService

BASE = "http://notifier"


def _service(deployment: DeploymentConfig, db_url: str, token: str) -> NotifierService:
    settings = Settings(
        twilio_base_url="http://127.0.0.1:9", twilio_account_sid="AC" + "0" * 31 + "2", twilio_auth_token=token
    )
    return NotifierService(settings, deployment, db_url, tick_s=None)


@pytest.fixture
async def services(deployment: DeploymentConfig, db_url: str, tmp_path: Path) -> AsyncIterator[list[NotifierService]]:
    made = [_service(deployment, db_url, "token-a"), _service(deployment, f"sqlite:///{tmp_path / 'b.db'}", "token-b")]
    try:
        yield made
    finally:
        for service in made:
            await service.stop()


async def test_a_callback_is_checked_against_the_token_of_the_apps_own_service(services: list[NotifierService]) -> None:
    url = f"{BASE}/twilio/status/999"
    params = {"MessageSid": "SM" + "1" * 32, "MessageStatus": "delivered"}
    signature = RequestValidator("token-a").compute_signature(url, params)
    answers = []
    for service in services:
        app = FastAPI()
        include_notifier(app, service)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
            answers.append((await client.post(url, data=params, headers={"X-Twilio-Signature": signature})).status_code)
    # A's token signed it: A looks the notification up (unknown here); B refuses the signature.
    assert answers == [404, 403]


async def test_routers_mounted_without_a_service_fail_loudly_naming_the_fix() -> None:
    app = FastAPI()
    app.include_router(twilio_router, prefix="/twilio")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
        with pytest.raises(RuntimeError, match="include_notifier"):
            await client.post("/twilio/sms", data={"From": "+77015550101", "Body": "OK K7QX"})
