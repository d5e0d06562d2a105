"""The console in real headless Chromium: log in, a new intervention appears live (SSE, no reload),
acknowledge it, close it. Screenshots go to test-artifacts/gateway/."""

from __future__ import annotations

import asyncio
import os
import shutil
from typing import Any

import pytest

from atmguard.core.settings import Settings
from atmguard.gateway.api.app import create_app
from atmguard.gateway.users import add_user
from atmguard.kafka.publisher import EventPublisher
from tests import factories
from tests.conftest import REPO
from tests.gateway.conftest import T0, serve

pytestmark = pytest.mark.slow
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = REPO / "test-artifacts" / "gateway"


def _browser_or_skip() -> None:
    if shutil.which("chromium") or os.path.exists(CHROMIUM):
        return
    if os.environ.get("ATMGUARD_REQUIRE_BROWSER") == "1":
        pytest.fail("ATMGUARD_REQUIRE_BROWSER=1 but /usr/bin/chromium is missing (apt-get install chromium)")
    pytest.skip("Debian's chromium is not installed (apt-get install chromium); set ATMGUARD_REQUIRE_BROWSER=1 to fail instead")


async def test_dispatcher_sees_a_new_intervention_live_acknowledges_and_closes_it(settings: Settings, broker: Any) -> None:
    _browser_or_skip()
    from playwright.async_api import async_playwright, expect

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    publisher = EventPublisher(broker.bootstrap, settings, timeout=2.0)
    await publisher.start(strict=True)
    app = create_app(settings, publisher=publisher, bootstrap=broker.bootstrap)
    add_user(app.state.gateway.sessions, "dina", "dispatcher", "correct horse 1")
    try:
        async with serve(app) as base, async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=CHROMIUM, headless=True,
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"],
            )
            page = await browser.new_page(viewport={"width": 1400, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(f"{base}/console")
            assert "/console/login" in page.url  # not logged in: sent to the log-in page
            await page.fill("input[name=name]", "dina")
            await page.fill("input[name=password]", "correct horse 1")
            await page.screenshot(path=str(ARTIFACTS / "1-login.png"))
            await page.click("button[type=submit]")
            await page.wait_for_url(f"{base}/console")
            await expect(page.locator("#live")).to_have_text("live", timeout=10_000)
            assert await page.locator("#cases tbody tr").count() == 0

            # the engine publishes an intervention; the console shows it without a reload
            phone = factories.fact(id="f-1", atm_id="atm-zhez-002", ts=T0, started_at=T0, duration_s=95)
            iv = factories.intervention(
                id="iv-browser-1", rule_version=3, atm_id="atm-zhez-002", ts=T0,
                message="atm-zhez-002: on the phone 95s, transfer 400000 to a new payee",
                matched=[factories.matched("on_phone", phone)],
            )
            await publisher.publish(iv)
            row = page.locator('#cases tbody tr[data-id="iv-browser-1"]')
            await expect(row).to_be_visible(timeout=10_000)
            await expect(row).to_contain_text("ул. Сейфуллина, 12")
            await expect(page.locator("#alert")).to_contain_text("CRITICAL")
            await page.screenshot(path=str(ARTIFACTS / "2-new-intervention.png"))

            await row.click()
            await expect(page.locator("#d-message")).to_contain_text("on the phone 95s")
            await expect(page.locator("#d-timeline")).to_contain_text("on_phone")
            await page.click("#a-ack")
            await expect(row.locator(".state")).to_have_text("acknowledged")
            await expect(page.locator("#d-timeline")).to_contain_text("acknowledged by dina via console")
            await page.screenshot(path=str(ARTIFACTS / "3-acknowledged.png"))

            await page.select_option("#a-outcome", "real_scam_stopped")
            await page.fill("#a-close-note", "customer stopped at the ATM, 4.4M KZT kept")
            await page.click("#a-close")
            await expect(page.locator("#d-title")).to_contain_text("closed")
            await expect(page.locator('#cases tbody tr[data-id="iv-browser-1"]')).to_have_count(0)  # filter: open + acknowledged
            await page.select_option("#f-state", "closed")
            await expect(row.locator(".state")).to_have_text("closed")
            await page.screenshot(path=str(ARTIFACTS / "4-closed.png"))
            assert errors == []
            await browser.close()
        summary = app.state.gateway.cases.summary("iv-browser-1")
        assert summary["state"] == "closed" and summary["outcome"] == "real_scam_stopped"
    finally:
        await publisher.stop()
        await asyncio.sleep(0)
