"""Follows the stream's topics for the gateway: feeds the hold advisor, records cases, tells banks.

One aiokafka consumer without a consumer group (every gateway process reads every partition
of the facts, bank and interventions topics), from the earliest offset: the advisor rebuilds
each ATM's recent state and the recorder is idempotent by intervention id.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import defaultdict, deque
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from atmguard.core.contracts import BANK_EVENT_TYPES, BankEvent, Intervention, parse_event
from atmguard.core.settings import Settings
from atmguard.gateway.advisor import HoldAdvisor
from atmguard.gateway.casebook import CaseBook
from atmguard.gateway.webhooks import BankWebhooks
from atmguard.kafka.compat import check_versions, pace_fetches

log = logging.getLogger(__name__)


class Recorder:
    """Turns stream records into cases: interventions with their recent context per ATM."""

    def __init__(
        self,
        cases: CaseBook,
        advisor: HoldAdvisor | None,
        webhooks: BankWebhooks | None,
        *,
        context_s: float = 600.0,
        customer_window_s: float = 1800.0,
        known: Callable[[tuple[str, str]], bool] | None = None,
    ) -> None:
        self.known = known
        self.cases = cases
        self.advisor = advisor
        self.webhooks = webhooks
        self.context = timedelta(seconds=context_s)
        self.customer_window = timedelta(seconds=customer_window_s)
        self._recent: dict[str, deque[tuple[datetime, dict[str, Any]]]] = defaultdict(lambda: deque(maxlen=200))

    def on_event_record(self, raw: bytes) -> None:
        """A fact or bank event from its topic."""
        try:
            data = json.loads(raw)
            if (
                self.known is not None and isinstance(data, dict) and data.get("type") in BANK_EVENT_TYPES
                and self.known((str(data.get("bank_id")), str(data.get("id"))))
            ):
                return  # accepted by this gateway: already fed and remembered
            event = parse_event(data)
        except Exception as exc:  # noqa: BLE001 - one unreadable record must not stop the follower
            log.warning("skipping unreadable event record: %s", exc)
            return
        if self.advisor is not None:
            self.advisor.on_event(event)
        atm_id = getattr(event, "atm_id", None)
        if atm_id:
            self._recent[atm_id].append((event.ts, data))

    async def on_intervention_record(self, raw: bytes) -> None:
        """An intervention from its topic: advise at once, then record (in a worker thread, off
        the loop that answers banks) and tell the banks whose customer stands there."""
        try:
            iv = Intervention.model_validate_json(raw)
        except Exception as exc:  # noqa: BLE001 - one unreadable record must not stop the follower
            log.warning("skipping unreadable intervention record: %s", exc)
            return
        if self.advisor is not None:
            self.advisor.on_intervention(iv)
        context = [e for ts, e in self._recent.get(iv.atm_id, ()) if iv.ts - self.context <= ts <= iv.ts + timedelta(seconds=5)]
        summary = await asyncio.to_thread(self.cases.store_intervention, iv, context)
        if summary is None:
            return
        self.cases.live.publish("case", summary)
        if self.webhooks is not None and iv.mode == "enforce":
            banks = self.banks_at(iv.atm_id, iv.ts) | {
                str(m.event.get("bank_id")) for m in iv.matched if m.event.get("bank_id")
            }
            if banks:
                self.webhooks.notify(banks, "intervention.opened", notice(iv.model_dump(mode="json")))

    def banks_at(self, atm_id: str, at: datetime) -> set[str]:
        """Banks whose customer stands at this ATM: a bank event there within the window."""
        return {
            str(e["bank_id"])
            for ts, e in self._recent.get(atm_id, ())
            if "bank_id" in e and abs(at - ts) <= self.customer_window
        }

    def on_bank_event_accepted(self, event: BankEvent) -> None:
        """The gateway accepted an event: remember the customer before the topic echoes it."""
        if event.atm_id:
            self._recent[event.atm_id].append((event.ts, json.loads(event.to_json())))


def notice(iv: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """What a bank is told about an intervention (no camera details, no phone numbers)."""
    keys = ("id", "rule", "severity", "atm_id", "ts", "message")
    out = {k: iv.get(k) for k in keys}
    out["hold"] = bool((iv.get("actions") or {}).get("hold", iv.get("hold", False)))
    out.update(extra)
    return out


class TopicFollower:
    """Background consumers of the three topics; reconnect with backoff while the broker is away.

    Facts and interventions are read as they come (the advisor and the cases need them at once).
    Bank events are read by a second consumer every `bank_every_s`: this gateway applies the
    events it accepts itself before answering, so the topic only adds what other gateways or
    producers published, and every fetch of the busiest topic costs the embedded broker time
    that grows with everything it keeps (kafka/pacing.py). At start-up it reads the bank topic
    from the beginning without pausing while fetches come back full (the advisor's state is
    rebuilt), then settles.
    """

    def __init__(self, bootstrap: str, settings: Settings, recorder: Recorder, *, bank_every_s: float = 1.0) -> None:
        self.bootstrap = bootstrap
        self.settings = settings
        self.recorder = recorder
        self.bank_every_s = bank_every_s
        self._tasks: list[asyncio.Task[None]] = []
        self.ready = asyncio.Event()

    async def start(self) -> None:
        check_versions()  # its consumers are paced (compat.pace_fetches): refuse an aiokafka that does not fit
        s, loop = self.settings, asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._run((s.topic_facts, s.topic_interventions), every_s=0.0)),
            loop.create_task(self._run((s.topic_bank,), every_s=self.bank_every_s)),
        ]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _run(self, topics: tuple[str, ...], *, every_s: float) -> None:
        from aiokafka import AIOKafkaConsumer

        interventions = self.settings.topic_interventions
        max_records = 500
        delay = 0.5
        while True:
            consumer = AIOKafkaConsumer(
                *topics,
                bootstrap_servers=self.bootstrap,
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                fetch_max_wait_ms=100,  # Tansu holds a fetch ~half of this even when data waits (NOTES); 20 ms cost 5 % of a core idle
                metadata_max_age_ms=2000,  # pick up topics created after we started
            )
            try:
                await consumer.start()
                pace_fetches(consumer)  # see atmguard/kafka/pacing.py: the embedded broker's fetches slow with age
                if interventions in topics:
                    self.ready.set()
                delay = 0.5
                while True:
                    batches = await consumer.getmany(timeout_ms=500, max_records=max_records)
                    got = 0
                    for tp, records in batches.items():
                        got += len(records)
                        for rec in records:
                            if rec.value is None:
                                continue
                            if tp.topic == interventions:
                                await self.recorder.on_intervention_record(rec.value)
                            else:
                                self.recorder.on_event_record(rec.value)
                    if every_s > 0 and got < max_records:  # caught up: no fetching until the next read
                        assigned = consumer.assignment()
                        consumer.pause(*assigned)
                        await asyncio.sleep(every_s)
                        consumer.resume(*assigned)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any broker failure: reconnect with backoff, never give up
                log.warning("topic follower of %s lost the broker (%r); retrying in %.1f s", ", ".join(topics), exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
            finally:
                with contextlib.suppress(Exception):
                    await consumer.stop()
