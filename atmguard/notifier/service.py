"""NotifierService: interventions in, SMS / radio calls / webhooks out, acks and escalation.

Lifecycle: `await start(bootstrap)` migrates the notifier tables, resumes what a previous
run left (retries, escalation deadlines), starts the timer loop and, given a Kafka
bootstrap, consumes the interventions topic (group "atmguard-notifier-<broker epoch>"). `await stop()`.

`handle(intervention)` is idempotent by intervention id: the id is recorded with the planned
notifications in one transaction before anything is sent, so a duplicate (redelivery after a
rebalance, a restart, a replay) sends nothing. Shadow-mode interventions are recorded only.

The service knows nothing of HTTP: its webhooks and ack API are atmguard.notifier.api, mounted
by whoever assembles the app (`include_notifier`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from pydantic import ValidationError
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from twilio.rest import Client

from atmguard.core.contracts import Intervention
from atmguard.core.settings import Settings
from atmguard.kafka.topics import EpochWatch, ensure_epoch, ensure_topics
from atmguard.notifier.acks import parse_reply
from atmguard.notifier.clock import Clock, SystemClock
from atmguard.notifier.config import DeploymentConfig, Person
from atmguard.notifier.db import NotifierDB, migrate_notifier
from atmguard.notifier.delivery import Delivery
from atmguard.notifier.escalation import Escalator
from atmguard.notifier.masking import mask_phone
from atmguard.notifier.messages import render_reply
from atmguard.notifier.metrics import NotifierMetrics, notifier_metrics
from atmguard.notifier.models import (
    INTERVENTIONS,
    Acknowledgement,
    EscalationDeadline,
    Notification,
    NotifiedIntervention,
    rowcount,
)
from atmguard.notifier.outcome import Outgoing
from atmguard.notifier.radio import RadioChannel
from atmguard.notifier.routing import Planned, plan
from atmguard.notifier.sms import SmsChannel
from atmguard.notifier.twilio_client import make_twilio_client, twilio_credentials
from atmguard.notifier.views import InboundResult, InterventionStatus, notification_view
from atmguard.notifier.webhook import WebhookChannel

log = logging.getLogger(__name__)
T = TypeVar("T")

CONSUMER_GROUP = "atmguard-notifier"
_INSERT_INTERVENTION = insert(INTERVENTIONS)


class NotifierService:
    """The notifier: see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        config: DeploymentConfig,
        db_url: str,
        twilio_client: Client | None = None,
        *,
        clock: Clock | None = None,
        tick_s: float | None = 1.0,
        webhook_http: Any = None,
        environ: dict[str, str] | None = None,
        metrics: NotifierMetrics | None = None,
        workers: int = 8,
        fetch_max_wait_ms: int = 10,
    ) -> None:
        self.settings = settings
        self.config = config
        self.db_url = db_url
        self.clock: Clock = clock or SystemClock()
        self.tick_s = tick_s
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.metrics = metrics or notifier_metrics()
        self.db = NotifierDB(db_url)
        self.twilio = twilio_client or make_twilio_client(settings, timeout=config.delivery.request_timeout_s)
        self.auth_token = getattr(self.twilio, "password", None) or twilio_credentials(settings)[1]
        self.public_url = settings.public_url.rstrip("/")
        sms_from = settings.twilio_from or config.sms.sender
        voice_from = settings.twilio_from or config.voice.sender
        self.delivery = Delivery(
            self.db,
            config,
            public_url=self.public_url,
            channels={
                "sms": SmsChannel(self.twilio, sms_from),
                "radio": RadioChannel(self.twilio, voice_from),
                "webhook": WebhookChannel(config.webhooks, client=webhook_http, environ=environ),
            },
            clock=self.clock,
            metrics=self.metrics,
            on_change=self._changed,
        )
        self.escalator = Escalator(self.db, config, self.delivery, self.clock, self.metrics)
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="notifier")
        self._listeners: list[Callable[[str], None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._inflight: set[asyncio.Future[None]] = set()
        self._consumer: AIOKafkaConsumer | None = None
        self._ready = asyncio.Event()
        self._migrated = False

    # -- lifecycle --------------------------------------------------------------------------

    def open(self) -> None:
        """Migrate the notifier tables (idempotent); `start()` does this too."""
        if not self._migrated:
            migrate_notifier(self.db_url)
            self._migrated = True

    async def start(self, bootstrap: str | None = None) -> None:
        """Resume from the database, start timers and (given `bootstrap`) the topic consumer."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        await self._run(self.open)
        resumed = await self._run(self._resume)
        if resumed:
            log.info("notifier resumed %d notification(s) interrupted mid-send", resumed)
        if self.tick_s is not None:
            self._tasks.append(asyncio.create_task(self._ticker(), name="notifier-timers"))
        if bootstrap:
            self._tasks.append(asyncio.create_task(self._consume_forever(bootstrap), name="notifier-consumer"))
        else:
            self._ready.set()

    async def stop(self) -> None:
        """Stop the consumer and timers; in-flight sends finish; nothing pending is lost (it is in the DB)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            # Stopping: a task's failure was logged where it happened, and must not stop the rest.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self._inflight:
            await asyncio.wait(list(self._inflight), timeout=30)
        self._executor.shutdown(wait=True)
        self.db.dispose()

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Until the consumer has its partitions (immediately without a broker)."""
        await asyncio.wait_for(self._ready.wait(), timeout)

    def wake(self) -> None:
        """Ask the timer loop to look for due work now (thread-safe; webhooks call it)."""
        if self._loop is not None and self._wake is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake.set)

    def add_listener(self, fn: Callable[[str], None]) -> None:
        """`fn(intervention_id)` after any notification or ack change (any thread; keep it quick)."""
        self._listeners.append(fn)

    def _changed(self, iv_id: str) -> None:
        for fn in self._listeners:
            try:
                fn(iv_id)
            except Exception:  # a listener (the console) must never break a delivery
                log.exception("notifier listener failed")

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    def _resume(self) -> int:
        """Rows a crash left in `sending` are sent again (at-least-once for the one in flight)."""
        now = self.clock.now()
        with self.db.tx() as s:
            return rowcount(s.execute(
                update(Notification)
                .where(Notification.state == "sending")
                .values(state="retrying", next_attempt_at=now, error="interrupted by a restart")
            ))

    # -- interventions ----------------------------------------------------------------------

    async def handle(self, intervention: Intervention) -> None:
        """Record and notify `intervention` once (idempotent by id); shadow mode notifies nobody."""
        outs = await self._run(self._record, intervention)
        if outs:
            await self._dispatch(outs)

    def _record(self, iv: Intervention) -> list[Outgoing]:
        """Take the intervention in (once) with its planned notifications, claimed for sending."""
        return self._record_batch([iv])[0]

    def _record_batch(self, ivs: list[Intervention]) -> list[list[Outgoing]]:
        """Take several interventions in with one commit (a consumer batch); duplicates get []."""
        now = self.clock.now()
        prepared = [(iv, self._plan(iv)) for iv in ivs]
        try:
            with self.db.tx() as s:
                ids = list({iv.id for iv in ivs})
                known = set(s.scalars(select(NotifiedIntervention.id).where(NotifiedIntervention.id.in_(ids))))
                result: list[list[Outgoing]] = []
                fresh: list[str] = []
                for iv, planned in prepared:
                    if iv.id in known:
                        result.append([])
                        continue
                    known.add(iv.id)
                    fresh.append(iv.id)
                    result.append(self._insert(s, iv, planned, now))
        except IntegrityError:  # another process took one of them in meanwhile: one at a time
            if len(ivs) == 1:
                result, fresh = [[]], []
            else:
                return [self._record_batch([iv])[0] for iv in ivs]
        for iv, outs in zip(ivs, result, strict=True):
            if iv.id in fresh:
                fresh.remove(iv.id)  # a second copy in the same batch is a duplicate
                self.metrics.interventions.labels(iv.mode, "new").inc()
                log.info("intervention %s (%s, %s) at %s: %d notification(s)", iv.id, iv.rule, iv.mode, iv.atm_id, len(outs))
                self._changed(iv.id)
            else:
                self.metrics.interventions.labels(iv.mode, "duplicate").inc()
                log.info("intervention %s already taken in: not sent again", iv.id)
        return result

    def _plan(self, iv: Intervention) -> list[Planned]:
        if iv.mode == "shadow":
            return []
        return plan(iv, self.config, iv.actions, when=iv.ts, public_url=self.public_url)

    def _insert(self, s: Session, iv: Intervention, planned: list[Planned], now: datetime) -> list[Outgoing]:
        sendable = [p for p in planned if not p.error]
        state = "shadow" if iv.mode == "shadow" else ("open" if sendable or not planned else "undelivered")
        s.connection().execute(
            _INSERT_INTERVENTION,
            {
                "id": iv.id, "atm_id": iv.atm_id, "rule": iv.rule, "severity": iv.severity, "mode": iv.mode,
                "short_code": iv.short_code, "state": state, "payload": iv.to_json(), "received_at": now,
                "escalation_step": 0, "first_sent_at": None, "acked_at": None,
            },
        )
        outs = self.delivery.create(s, iv.id, planned, reason="initial", now=now, received_at=now, claim=True, fresh=True)
        if outs and self.escalator.applies(iv) and any(p.channel in ("sms", "radio") for p in sendable):
            self.escalator.schedule(s, iv.id, now)
        return outs

    async def _dispatch(self, outs: list[Outgoing]) -> None:
        """Send claimed notifications concurrently, then any fallbacks they produce."""
        pending = list(outs)
        while pending:
            results = await asyncio.gather(*(self._run(self.delivery.deliver, out) for out in pending))
            pending = [o for follow_up in results for o in follow_up]

    async def _attempt_all(self, ids: list[int]) -> None:
        results = await asyncio.gather(*(self._run(self.delivery.attempt, nid) for nid in ids))
        await self._dispatch([o for follow_up in results for o in follow_up])

    async def run_due(self) -> int:
        """One timer pass: escalations whose deadline passed, then due retries/fallbacks. Returns sends tried."""
        escalated, due = await self._run(self._due_work)
        await asyncio.gather(self._dispatch(escalated), self._attempt_all(due))
        return len(escalated) + len(due)

    def _due_work(self) -> tuple[list[Outgoing], list[int]]:
        """What is due now, in one trip to a worker thread (the timer runs every second)."""
        now = self.clock.now()
        escalated: list[Outgoing] = []
        for deadline_id in self.escalator.due(now):
            escalated += self.escalator.fire(deadline_id)
        return escalated, self.delivery.due(now)

    async def _ticker(self) -> None:
        assert self._wake is not None
        while True:
            try:
                await self.run_due()
            except asyncio.CancelledError:
                raise
            except Exception:  # one failed pass (database away, a bug) must not stop the timers
                log.exception("notifier timer pass failed; trying again")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.tick_s)
            self._wake.clear()

    # -- acknowledgement --------------------------------------------------------------------

    async def acknowledge(self, intervention_id: str, by: str, via: str) -> bool:
        """Acknowledge: stops escalation. True when this call acknowledged it; False if unknown,
        shadow-only or already acknowledged."""
        return await self._run(self.acknowledge_sync, intervention_id, by, via)

    def acknowledge_sync(self, intervention_id: str, by: str, via: str) -> bool:
        """`acknowledge` for threads without an event loop (webhook handlers)."""
        now = self.clock.now()
        with self.db.tx() as s:
            done = rowcount(s.execute(
                update(NotifiedIntervention)
                .where(NotifiedIntervention.id == intervention_id, NotifiedIntervention.state.in_(("open", "undelivered")))
                .values(state="acknowledged", acked_at=now)
            ))
            if done != 1:
                return False
            row = s.get_one(NotifiedIntervention, intervention_id)
            latency = max(0.0, (now - row.received_at).total_seconds())
            s.add(Acknowledgement(intervention_id=intervention_id, by=by[:200], via=via[:32], at=now, latency_s=latency))
            cancelled = self.escalator.cancel(s, intervention_id)
            s.execute(
                update(Notification)
                .where(
                    Notification.intervention_id == intervention_id,
                    Notification.state.in_(("queued", "retrying")),
                    Notification.channel.in_(("sms", "radio")),  # a CAD system still gets its record
                )
                .values(state="cancelled", error="acknowledged", next_attempt_at=None, updated_at=now)
            )
        self.metrics.ack_latency.observe(latency)
        log.info("intervention %s acknowledged by %s via %s (%d escalation step(s) cancelled)", intervention_id, by, via, cancelled)
        self._changed(intervention_id)
        return True

    def inbound_sms(self, from_: str, body: str) -> InboundResult:
        """An SMS to our number: acknowledge when it is "OK <CODE>" / "1 <CODE>" from a known person."""
        who = self.config.person_by_phone(from_.strip())
        if who is None:
            log.warning("inbound SMS from unknown number %s ignored", mask_phone(from_))
            return InboundResult(outcome="unknown_sender")
        pid, person = who
        reply = parse_reply(body)
        if reply is None:
            return InboundResult(outcome="not_an_ack", person=pid, language=person.language)
        target = self._find_for_ack(person, reply.code)
        base: dict[str, Any] = {"person": pid, "language": person.language, "code": reply.code}
        if isinstance(target, InboundResult):
            return target.model_copy(update=base)
        done = self.acknowledge_sync(target, by=f"{pid} ({mask_phone(person.phone)})", via="sms")
        short = self._short_code(target)
        return InboundResult(outcome="acknowledged" if done else "already", intervention_id=target, **{**base, "code": short})

    def reply_text(self, result: InboundResult) -> str:
        """What the notifier answers an officer's SMS, in the officer's language."""
        address = ""
        if result.intervention_id:
            with self.db.read() as s:
                row = s.get(NotifiedIntervention, result.intervention_id)
            if row is not None:
                atm = self.config.atm(row.atm_id)
                address = atm.address if atm else row.atm_id
        return render_reply(result.outcome, code=result.code or "", address=address, language=result.language)

    def _short_code(self, intervention_id: str) -> str | None:
        with self.db.read() as s:
            row = s.get(NotifiedIntervention, intervention_id)
            return row.short_code if row else None

    def _find_for_ack(self, person: Person, code: str | None) -> str | InboundResult:
        with self.db.read() as s:
            notified = select(Notification.intervention_id).where(Notification.address == person.phone)
            if code is None:
                open_ids = list(
                    s.scalars(
                        select(NotifiedIntervention.id).where(
                            NotifiedIntervention.id.in_(notified), NotifiedIntervention.state.in_(("open", "undelivered"))
                        )
                    )
                )
                if len(open_ids) == 1:
                    return open_ids[0]
                return InboundResult(outcome="need_code")
            rows = list(
                s.scalars(
                    select(NotifiedIntervention)
                    .where(NotifiedIntervention.short_code == code, NotifiedIntervention.mode == "enforce")
                    .order_by(NotifiedIntervention.received_at.desc())
                )
            )
            if not rows:
                return InboundResult(outcome="unknown_code")
            mine = set(s.scalars(notified))
            # Same code twice (4 characters): prefer an open one this person was told about.
            rows.sort(key=lambda r: (r.state not in ("open", "undelivered"), r.id not in mine))
            return rows[0].id

    # -- status for the console -------------------------------------------------------------

    def status(self, intervention_id: str) -> InterventionStatus | None:
        """Notifications, their states, the ack and pending escalations of one intervention."""
        with self.db.read() as s:
            row = s.get(NotifiedIntervention, intervention_id)
            if row is None:
                return None
            ack = s.scalar(select(Acknowledgement).where(Acknowledgement.intervention_id == intervention_id))
            pending = list(
                s.scalars(
                    select(EscalationDeadline.due_at)
                    .where(EscalationDeadline.intervention_id == intervention_id, EscalationDeadline.state == "pending")
                    .order_by(EscalationDeadline.due_at)
                )
            )
            notes = list(
                s.scalars(select(Notification).where(Notification.intervention_id == intervention_id).order_by(Notification.id))
            )
            return InterventionStatus(
                id=row.id, state=row.state, short_code=row.short_code, escalation_step=row.escalation_step,
                received_at=row.received_at, acked_by=ack.by if ack else None, acked_via=ack.via if ack else None,
                acked_at=ack.at if ack else None, pending_escalations=pending,
                notifications=[notification_view(n) for n in notes],
            )

    # -- topic consumer ---------------------------------------------------------------------

    async def _consume_forever(self, bootstrap: str) -> None:
        """Keep a consumer running: a broker that is away or restarts is reconnected to.

        The consumer group is per broker epoch (atmguard.kafka.topics): when the in-memory
        broker restarted empty, a commit of the old consumer still under way lands in the old
        epoch's group, not in the one read from then on (it would skip the interventions
        published after the restart). On an epoch change the consumer is replaced.
        """
        delay = 1.0
        while True:
            try:
                try:  # as every process does: a topic auto-created by our subscription gets the wrong partitions
                    await ensure_topics(bootstrap, self.settings, timeout=10.0)
                except Exception as exc:  # noqa: BLE001 - e.g. no right to create topics: consume anyway
                    log.warning("could not create the topics (%s: %s); consuming anyway", type(exc).__name__, exc)
                epoch = await ensure_epoch(bootstrap)
                consume = asyncio.create_task(self._consume(bootstrap, f"{CONSUMER_GROUP}-{epoch[:8]}"))
                watch = EpochWatch(bootstrap, epoch)
                try:
                    while not consume.done():
                        await asyncio.wait({consume}, timeout=1.0)
                        if not consume.done() and await watch.changed() is True:
                            log.warning("broker restarted (its data is gone): interventions consumer starts afresh")
                            break
                    if consume.done():
                        consume.result()
                    delay = 1.0
                finally:
                    consume.cancel()
                    await asyncio.wait({consume}, timeout=10.0)
                    await watch.close()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - whatever stopped the consumer, reconnect
                log.error("interventions consumer stopped (%s: %s); reconnecting in %.0f s", type(exc).__name__, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def _consume(self, bootstrap: str, group_id: str = CONSUMER_GROUP) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=self.fetch_max_wait_ms,  # the broker holds fetches about half of it: keep it short
            session_timeout_ms=6000,
            heartbeat_interval_ms=1000,
        )
        consumer.subscribe([self.settings.topic_interventions], listener=_ReadyOnAssignment(self._ready))
        await consumer.start()
        self._consumer = consumer
        try:
            while True:
                batch = await consumer.getmany(timeout_ms=200)
                records = [m for msgs in batch.values() for m in msgs]
                if not records:
                    continue
                # Recording is the durable step (rows exist, a restart resumes them): send in the
                # background so a slow provider never holds the partition, and commit.
                await self._record_messages(records)
                await consumer.commit()
        finally:
            await consumer.stop()

    async def _record_messages(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        """Record a consumer batch (one commit), then send from the same worker thread.

        Returns once the batch is recorded, so the offsets can be committed; the sends go on
        without another hop through the event loop (each hop costs a GIL handoff).
        """
        ivs: list[Intervention] = []
        for record in records:
            try:
                ivs.append(Intervention.model_validate_json(record.value))
            except ValidationError as exc:
                log.error(
                    "not an intervention at %s[%d]@%d: %s",
                    record.topic, record.partition, record.offset, exc.errors()[0]["msg"],
                )
        if not ivs:
            return
        loop = asyncio.get_running_loop()
        delay = 0.5
        while True:  # the database may be briefly away: never skip an accepted intervention
            recorded: asyncio.Future[None] = loop.create_future()

            def signal(exc: BaseException | None, fut: asyncio.Future[None] = recorded) -> None:
                def settle() -> None:
                    if not fut.done():
                        fut.set_exception(exc) if exc is not None else fut.set_result(None)

                loop.call_soon_threadsafe(settle)

            job = loop.run_in_executor(self._executor, self._record_then_send, ivs, signal)
            self._inflight.add(job)
            job.add_done_callback(self._inflight.discard)
            try:
                await recorded
                return
            except asyncio.CancelledError:
                raise
            except Exception:  # the database may be briefly away: retry, never skip
                log.exception("recording %d intervention(s) failed, retrying in %.1fs", len(ivs), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _record_then_send(self, ivs: list[Intervention], signal: Callable[[BaseException | None], None]) -> None:
        try:
            batches = self._record_batch(ivs)
        except BaseException as exc:  # noqa: BLE001 - handed on to the waiting coroutine, which decides
            signal(exc)
            return
        signal(None)
        outs = [o for batch in batches for o in batch]
        for out in outs[1:]:  # the others in parallel; the first one right here
            self._executor.submit(self._send_chain, out)
        if outs:
            self._send_chain(outs[0])

    def _send_chain(self, out: Outgoing) -> None:
        """Send one claimed notification and whatever fallbacks its failure claims."""
        pending = [out]
        while pending:
            pending = [follow for o in pending for follow in self.delivery.deliver(o)]



class _ReadyOnAssignment(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka ships no type hints
    """Sets `ready` once the consumer has partitions: `wait_ready()` returns from then on."""

    def __init__(self, ready: asyncio.Event) -> None:
        self.ready = ready

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        return None

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        if assigned:
            self.ready.set()
