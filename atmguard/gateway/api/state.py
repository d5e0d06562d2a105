"""Everything the gateway's routes share, assembled once by create_app."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy.orm import Session, sessionmaker

from atmguard.core.contracts import BankEvent
from atmguard.core.settings import GatewaySettings, Settings
from atmguard.gateway.advisor import Advice, HoldAdvisor
from atmguard.gateway.casebook import CaseBook
from atmguard.gateway.follower import Recorder
from atmguard.gateway.keys import BankKeys
from atmguard.gateway.ratelimit import RateLimiter
from atmguard.gateway.receipts import ReceiptWriter


class Publisher(Protocol):
    """What the gateway needs of atmguard.kafka.publisher.EventPublisher: publish returns after the
    broker acknowledged and raises BrokerUnavailable when it cannot."""

    async def publish(self, event: Any) -> None: ...


class Notifier(Protocol):
    """What the console needs of the notifier service (to stop escalation on a console ack)."""

    async def acknowledge(self, intervention_id: str, by: str, via: str) -> bool: ...


@dataclass
class GatewayState:
    """Shared state of one gateway process."""

    settings: Settings
    config: GatewaySettings
    sessions: sessionmaker[Session]
    keys: BankKeys
    cases: CaseBook
    publisher: Publisher
    advisor: HoldAdvisor
    recorder: Recorder
    limiter: RateLimiter
    receipt_writer: ReceiptWriter
    notifier: Notifier | None = None
    receipts: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    inflight: dict[tuple[str, str], asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    advised: dict[tuple[str, str], Advice] = field(default_factory=dict)
    receipts_max: int = 200_000

    def remember(self, key: tuple[str, str], answer: dict[str, Any]) -> None:
        """Cache one receipt (bounded: the database keeps them all)."""
        if len(self.receipts) >= self.receipts_max:
            for old in list(self.receipts)[: self.receipts_max // 10]:
                self.receipts.pop(old, None)
        self.receipts[key] = answer

    def advise(self, event: BankEvent) -> Advice:
        """Advice for an event, computed once per event id even across retries after a 503."""
        key = (event.bank_id, event.id)
        advice = self.advised.get(key)
        if advice is None:
            advice = self.advisor.advise_and_feed(event)
            if len(self.advised) > 100_000:
                self.advised.clear()
            self.advised[key] = advice
        return advice
