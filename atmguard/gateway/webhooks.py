"""Signed webhooks to banks when an intervention opens or closes where their customer stands.

Signed like the bank API (X-Atmguard-Bank/-Timestamp/-Signature, HMAC-SHA256 with the bank's
current key over `TIMESTAMP + "." + BODY`). Best effort: retried with backoff in the
background, each attempt's result in the audit log; a failure never blocks the gateway.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import httpx

from atmguard.gateway.auth import sign_headers
from atmguard.gateway.casebook import CaseBook
from atmguard.gateway.keys import BankKeys

log = logging.getLogger(__name__)


class BankWebhooks:
    """Posts intervention notices to the banks that set a webhook URL."""

    def __init__(self, keys: BankKeys, cases: CaseBook, *, retries: int = 4, timeout_s: float = 5.0, backoff_s: float = 0.5):
        self.keys = keys
        self.cases = cases
        self.retries = retries
        self.timeout_s = timeout_s
        self.backoff_s = backoff_s
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None

    def notify(self, bank_ids: set[str], event: str, notice: dict[str, Any]) -> None:
        """Schedule a notice to each bank (non-blocking)."""
        urls = self.keys.webhooks()
        for bank_id in sorted(bank_ids):
            url = urls.get(bank_id)
            if url:
                task = asyncio.get_running_loop().create_task(self._deliver(bank_id, url, event, notice))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _deliver(self, bank_id: str, url: str, event: str, notice: dict[str, Any]) -> None:
        body = json.dumps({"event": event, "intervention": notice}, ensure_ascii=False, default=str).encode()
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout_s)
        result = "failed"
        attempt = 0
        for attempt in range(1, self.retries + 2):
            key = self.keys.current_key(bank_id)
            if key is None:
                result = "no key"
                break
            headers = {"Content-Type": "application/json", **sign_headers(bank_id, key, body)}
            try:
                resp = await self._client.post(url, content=body, headers=headers)
                if resp.status_code < 300:
                    result = "delivered"
                    break
                result = f"HTTP {resp.status_code}"
                if 400 <= resp.status_code < 500 and resp.status_code not in (408, 429):
                    break
            except httpx.HTTPError as exc:
                result = type(exc).__name__
            await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1))
        log.info("bank webhook %s to %s: %s after %d attempt(s)", event, bank_id, result, attempt)
        try:
            self.cases.audit(
                "gateway", "bank.webhook", notice.get("id"),
                {"bank_id": bank_id, "event": event, "result": result, "attempts": attempt},
            )
        except Exception:  # the audit write must not undo a delivered webhook
            log.exception("cannot audit webhook")

    async def aclose(self) -> None:
        """Let pending deliveries finish briefly, then close."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2)
            for t in self._tasks:
                t.cancel()
        if self._client is not None:
            await self._client.aclose()
            self._client = None
