"""The engine's Faust adapter: the app, its topics, agent, timers and state table around `EngineCore`.

Topics (names and partition count from `atmguard.core.settings`), all keyed by atm_id and
co-partitioned, so every event of one ATM reaches the same worker and the same agent:

    facts topic ─┐
                 ├─► agent `evaluate` ─► EngineCore.process ─► interventions topic
    bank topic ──┘        │
                          └─ table `state` (changelog-backed): recent events + published intervention ids

Delivery is at least once (Tansu has no transactions). Exactly-once *effects* come from the
state table: every processed event id is recorded (so a redelivered event is skipped) and
every published intervention id is recorded after the broker acknowledged it (so a replay
never re-publishes it). The table's records are per event, not per ATM: a per-ATM snapshot
would rewrite the whole window on every event, a record per event is O(1). After a partition
assignment the table is recovered by Faust and the rule state of those ATMs is rebuilt by
replaying their recent events, in arrival order, into a fresh RuleEngine before any new event
is processed; interventions the replay makes that were never acknowledged are published then.
Records expire by event time (`dedupe_ttl_s`, at least the longest rule window + 1 minute).

Every one of those decisions is `atmguard.engine.core`'s (pure, tested without a broker). This
module does what needs Faust and the broker: batches from the agent, publishing with retry until
the broker acknowledged, the changelog written in batches, rule reloads, fencing, lag.

A batch's interventions are published in a task behind the agent (`_publish_behind`), which goes
on with the next batch meanwhile. The order that makes the guarantees is kept where offsets are
committed: Faust flushes its producer before every commit, and that flush waits for every
publication running (so for its acks and its "published" marks on the changelog) before the
offsets, chosen before the flush, are committed. A publication cut short fences the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import faust
from pydantic import Field
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from atmguard.core import runtime_policy
from atmguard.core.contracts import Intervention
from atmguard.core.settings import EngineSettings
from atmguard.engine.core import BatchOutcome, EngineCore
from atmguard.engine.metrics import TopicMetrics, engine_metrics
from atmguard.engine.records import Firing, StoredJSON
from atmguard.engine.rulebook import RuleEngineLike
from atmguard.kafka.compat import EngineHooks, abort_app_producer, app_producer, cancel_commits
from atmguard.kafka.compat import FaustApp as FaustApp  # re-exported: the engine's app is imported from here
from atmguard.rules.reload import RulePackWatcher
from atmguard.rules.reload import load_pack as load_ruleset  # the name the engine's users know

if TYPE_CHECKING:
    from atmguard.core.settings import Settings
    from atmguard.rules.ruleset import RuleSet

__all__ = [
    "CHANGELOG_BATCH",
    "Engine",
    "EngineFenced",
    "EngineOptions",
    "FaustApp",
    "app_id_for",
    "load_ruleset",
]

log = logging.getLogger("atmguard.engine")


CHANGELOG_BATCH = 500
"""Queued state records that make a batch flush them at once (else the 20 ms timer does)."""

PUBLISHING_MAX = 8
"""Batches whose interventions may be in flight while the agent goes on; one more waits for the oldest.

Bounded so that a broker that stops acknowledging stops the agent too (nothing piles up unacked)."""

_HW_SENTINEL = json.dumps("~hw").encode()


# --- Options ------------------------------------------------------------------------------------


class EngineOptions(EngineSettings):
    """How one engine worker runs: the ATMGUARD_ENGINE_* tuning (defaults and bounds from
    core/settings.py, the tuned values of docs/operations.md) plus where its rules and data are.

    Built from explicit values only (a test or the demo says exactly how its worker runs);
    `from_env` is the one that reads the environment. Among the tuning: `fetch_max_wait_ms`,
    because Faust 0.15.3 hardcodes a 1,500 ms fetch wait and Tansu holds a fetch for about half
    of that even when data waits (send-to-agent p50 ~380 ms; at 10 ms the cost is ~5% of a core
    idle for worker and broker), applied by kafka/compat.py; and `fetch_pacing` 1, because 4,
    the default of other consumers, made the next fetch wait ~4 x 7 ms and was most of the
    intervention p99.
    """

    model_config = SettingsConfigDict(extra="forbid")

    rules_dir: Path = Path("rules")
    data_dir: Path = Path(".atmguard")
    extra_conf: dict[str, Any] = Field(default_factory=dict)
    """More Faust app settings, passed as they are."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)  # explicit values only: the environment is read by `from_env`

    @classmethod
    def from_env(cls, **values: Any) -> EngineOptions:
        """Options tuned by the ATMGUARD_ENGINE_* settings (core/settings.py), overridden by `values`."""
        return cls(**{**EngineSettings().model_dump(), **values})


# --- The engine -------------------------------------------------------------------------------


class EngineFenced(Exception):  # a state, not a failure: hence no "Error" in its name
    """The engine was fenced (broker reset or interrupted batch): it must not write or commit."""


def app_id_for(options: EngineOptions, epoch: str | None) -> str:
    """The Faust app id (consumer group, prefix of the state table's changelog) for a broker epoch.

    Per epoch, because the in-memory broker restarts empty while the previous engine still
    runs for a moment: what that engine commits or writes after the restart (offsets of the
    old topics, retried state records) must land in names the new engine never reads.
    On a broker that keeps its data the epoch never changes, so neither does the id.
    """
    return f"{options.app_id}-{epoch[:8]}" if epoch else options.app_id


class Engine:
    """One engine worker: the Faust app, its topics, agent and state table, around the engine core."""

    def __init__(
        self, settings: Settings, options: EngineOptions, broker_url: str, *, epoch: str | None = None
    ) -> None:
        self.settings = settings
        self.options = options
        self.metrics = engine_metrics()
        self.broker_url = broker_url
        self.epoch = epoch
        self.fenced: str | None = None
        """Why the engine was fenced (see `fence`); None while it runs normally."""
        self.needs_restart: str | None = None
        """Set when the app must be replaced by a fresh one (a batch was interrupted); run_engine does."""
        runtime_policy.shorten_gil_switch()  # Faust's consumer thread would keep the loop waiting
        datadir = Path(options.data_dir) / "faust"
        datadir.mkdir(parents=True, exist_ok=True)
        # what the app's transport needs from this engine (kafka/compat.py)
        self.hooks = EngineHooks(
            fetch_max_wait_ms=options.fetch_max_wait_ms,
            commit_timeout_s=options.commit_timeout_s,
            input_topics=frozenset({settings.topic_facts, settings.topic_bank}),
            is_fenced=lambda: self.fenced is not None,
            before_flush=self._before_commit,
            fetch_pacing=options.fetch_pacing,
        )
        self.app = FaustApp(
            app_id_for(options, epoch),
            hooks=self.hooks,
            broker=broker_url,
            store="memory://",
            datadir=str(datadir),
            topic_partitions=settings.partitions,
            topic_replication_factor=1,
            topic_allow_declare=True,
            web_enabled=False,
            broker_session_timeout=options.session_timeout_s,
            broker_heartbeat_interval=options.heartbeat_s,
            broker_commit_interval=options.commit_interval_s,
            broker_request_timeout=max(30.0, options.session_timeout_s * 2),
            broker_rebalance_timeout=max(10.0, options.session_timeout_s * 2),
            consumer_auto_offset_reset="earliest",
            processing_guarantee="at_least_once",
            producer_linger_ms=0,
            table_cleanup_interval=60.0,
            autodiscover=False,
            key_serializer="json",  # the state table's keys are str; topics below say "raw" themselves
            value_serializer="json",
            **options.extra_conf,
        )
        self.inputs = self.app.topic(
            settings.topic_facts, settings.topic_bank, value_serializer="raw", key_serializer="raw"
        )
        self.interventions = self.app.topic(
            settings.topic_interventions,
            value_serializer="raw",
            key_serializer="raw",
            partitions=settings.partitions,
        )
        self.table = self.app.Table(
            "state",
            default=None,
            partitions=settings.partitions,
            help="Recent events (by id) and published interventions (by id) of the ATMs of each partition.",
        )
        self.table.on_recover(self._on_recover)
        self.app.agent(self.inputs, name="atmguard.engine.evaluate", concurrency=1)(self._evaluate)
        self.app.task(self._watch_rules)
        self.app.timer(1.0)(self._report_lag)

        self._positions: dict[tuple[str, int], int] = {}
        self.consumed = 0
        self._topic_metrics: dict[str, TopicMetrics] = {}
        self._changelog_topic: str = self.table.changelog_topic.get_topic_name()
        self._cl_buf: defaultdict[int, list[tuple[bytes, bytes | None]]] = defaultdict(list)
        self._cl_count = 0
        self._cl_lock = asyncio.Lock()
        # publications running behind the agent (see `_publish_behind`), and the future the next
        # one waits for before sending, so interventions reach the topic in batch order
        self._publishing: set[asyncio.Task[None]] = set()
        self._sent: asyncio.Future[None] | None = None
        self.core = EngineCore(
            self.table.data, self._changelog,
            dedupe_ttl_s=options.dedupe_ttl_s, sweep_interval_s=options.sweep_interval_s,
        )
        self.app.timer(0.02)(self._flush_timer)
        self.restored = 0
        # the rule loading and hot reload the gateway's advisor uses too (atmguard/rules/reload.py)
        self.rules = RulePackWatcher(
            Path(options.rules_dir), self._apply_rules, debounce_ms=options.reload_debounce_ms,
            on_reload=self.metrics.rule_reloads.inc, on_failure=self.metrics.rule_reload_failures.inc, logger=log,
        )
        self._load_initial_rules()

    @property
    def rule_engine(self) -> RuleEngineLike:
        """The core's rule engine (the worker closes it when the app is replaced)."""
        return self.core.rule_engine

    # -- fencing ---------------------------------------------------------------------------------

    def fence(self, reason: str, *, abort_producer: bool = False) -> None:
        """From now on commit no offset and write nothing; batches still delivered are skipped.

        Used before the app is replaced: after the broker lost its data (`abort_producer`: the
        records still pending are failed, they belong to the old broker and, retried into the
        new one, would break its partitions; see kafka/compat.abort_producer), and after a batch
        was interrupted mid-way (its records were never fully processed, and Faust acks a
        batch whatever happened to it: committing now could skip them). Records fenced out
        are delivered again to the next app from the last committed offset (at least once);
        the state table turns those it already saw into duplicates.
        """
        if self.fenced is None:
            self.fenced = reason
            log.info("engine fenced (%s): no more commits or writes from this app", reason)
        cancel_commits(self.app)  # the hooks' is_fenced() holds from now on: no new commit starts
        if abort_producer:
            abort_app_producer(self.app, EngineFenced(reason))

    # -- rules ----------------------------------------------------------------------------------

    def _load_initial_rules(self) -> None:
        # invalid rules: keep consuming (nothing accepted is lost) and say exactly where they are
        # wrong; the folder is watched, so fixing the file loads the rules
        ruleset = self.rules.first_load("invalid rules, the engine fires NOTHING until they are fixed")
        try:
            self.core.install_rules(ruleset)
        except ImportError as exc:
            self.rules.digest = None  # nothing runs: the next change of the folder tries again
            log.warning("rules runtime not available (%s); the engine consumes events but fires nothing", exc)
            return
        self._installed(ruleset)

    def _installed(self, ruleset: RuleSet | None) -> None:
        """Say which rules a fresh rule engine runs."""
        self.metrics.rules_loaded.set(len(ruleset.rules) if ruleset is not None else 0)
        if ruleset is None:
            log.warning("no rules loaded from %s: the engine fires nothing until valid rules are there",
                        self.options.rules_dir)
        else:
            log.info("rules loaded from %s: %d rules, digest %s", self.options.rules_dir, len(ruleset.rules),
                     ruleset.digest)

    def _apply_rules(self, ruleset: RuleSet | None) -> None:
        """A changed, valid rule pack from the watcher: in place now, between two batches (we are on the loop).

        Raising (a compile error of the swap) refuses it: the watcher logs and counts that, old rules stay.
        """
        change = self.core.change_rules(ruleset)
        if change == "installed":
            self._installed(ruleset)
        elif change == "swapped" and ruleset is not None:
            self.metrics.rules_loaded.set(len(ruleset.rules))

    async def _watch_rules(self) -> None:
        if self.options.watch_rules:
            await self.rules.run()

    # -- processing -----------------------------------------------------------------------------

    async def _evaluate(self, stream: Any) -> None:
        # Several records per agent step: Faust's per-step machinery, the awaits, the metric
        # updates and the changelog/publish round trips are paid once per batch, not per record.
        # `within` bounds the wait for a batch to fill (the added latency when the load is low).
        # Faust acks a batch when this body is left for it, also when it was left half-way by a
        # cancellation (worker stop, Faust restarting the agent): then the engine is fenced (no
        # offset committed from then on) and replaced by a fresh app, which gets the records
        # again from the last committed offset and re-publishes interventions never acknowledged.
        within = max(0.001, self.options.batch_within_ms / 1000)
        try:
            async for events in stream.take_events(max(1, self.options.batch_max), within=within):
                finished = False
                try:
                    await self.handle_batch(events)
                    finished = True
                except asyncio.CancelledError:
                    raise
                except Exception:  # broad on purpose: one poisoned batch must not stop every ATM
                    finished = True
                    first = events[0].message if events else None
                    if self.fenced is not None:
                        log.info("batch of %d records dropped (engine fenced: %s); it will be delivered again",
                                 len(events), self.fenced)
                    else:
                        log.exception(
                            "engine failed on a batch of %d records (first %s[%s]@%s)", len(events),
                            getattr(first, "topic", "?"), getattr(first, "partition", "?"),
                            getattr(first, "offset", "?"),
                        )
                finally:
                    if not finished:
                        self.fence("a batch was interrupted before it was processed")
                        self.needs_restart = self.needs_restart or "a batch was interrupted"
        finally:
            # the agent stops (worker stop, Faust restarting it): a publication still running
            # behind it is interrupted as a batch would be (fenced; a fresh app replays it)
            self._interrupt_publications()

    async def handle_batch(self, events: Sequence[Any]) -> None:
        """Process the Faust events of one agent step (none once fenced: they come again)."""
        if self.fenced is not None:
            return
        await self._process([(event.message, event.value) for event in events])

    async def _process(self, records: Sequence[tuple[Any, bytes]]) -> None:
        """Hand a batch to the core (no await in between), count it, publish its firings."""
        now = time.time()
        for message, _ in records:
            topic = message.topic
            self.consumed += 1
            self._positions[(topic, message.partition)] = message.offset + 1
            if message.timestamp:
                self._labelled(topic).lag.observe(max(0.0, now - message.timestamp))
        outcome = self.core.process(records)
        self._count(outcome)
        self.metrics.state_events.set(len(self.table.data))
        if outcome.firings:
            await self._publish_behind(outcome.firings)
        elif self._cl_count >= CHANGELOG_BATCH:
            await self.flush_changelog()

    def _count(self, outcome: BatchOutcome) -> None:
        for (topic, kind), n in outcome.events_in.items():
            self._labelled(topic).events_in(kind).inc(n)
        for topic, n in outcome.duplicates.items():
            self._labelled(topic).duplicate.inc(n)
        for topic, n in outcome.invalid.items():
            self._labelled(topic).invalid.inc(n)

    async def _publish_behind(self, firings: Sequence[Firing]) -> None:
        """Publish a batch's firings in a task of its own: the agent goes on with the next batch.

        Its acks and the changelog flush of its "published" marks (two broker round trips) used to
        hold the next batch back. The order the guarantees need still holds: Faust picks the
        offsets to commit, then flushes its producer, and that flush first waits for every
        publication running (`_before_commit`); a batch's publication starts before Faust acks
        its events, so no offset is committed before the marks of its events' interventions are
        on the broker. At most PUBLISHING_MAX run at once (then the agent waits for the oldest).
        """
        while len(self._publishing) >= PUBLISHING_MAX:
            await asyncio.wait(set(self._publishing), return_when=asyncio.FIRST_COMPLETED)
        task = asyncio.ensure_future(self._publish_many(firings))
        self._publishing.add(task)
        task.add_done_callback(self._publication_done)

    def _publication_done(self, task: asyncio.Task[None]) -> None:
        """A publication behind the agent ended: say what went wrong, as the agent did for its batch."""
        self._publishing.discard(task)
        if task.cancelled():
            # its events may be acked already: only fencing keeps their offsets from being committed
            self.fence("a publication was interrupted before the broker acknowledged it")
            self.needs_restart = self.needs_restart or "a publication was interrupted"
            return
        exc = task.exception()
        if exc is None:
            return
        if self.fenced is not None:
            log.info("publication of a batch dropped (engine fenced: %s); it will be made again", self.fenced)
        else:
            log.error("publishing the interventions of a batch failed", exc_info=exc)

    def _interrupt_publications(self) -> None:
        """Cancel the publications still running (the agent stops); fenced first, so nothing is committed."""
        running = [task for task in self._publishing if not task.done()]
        if running:
            self.fence("the agent stopped while interventions were being published")
            self.needs_restart = self.needs_restart or "a publication was interrupted"
            for task in running:
                task.cancel()

    async def _publications_done(self) -> None:
        """Wait for every publication running now (whatever its end; the done callback reports it)."""
        running = [task for task in self._publishing if not task.done()]
        if running:
            await asyncio.wait(running)

    async def _before_commit(self) -> None:
        """Before Faust flushes its producer for an offset commit: publications, then the changelog."""
        await self._publications_done()
        await self.flush_changelog()

    async def _publish_many(self, firings: Sequence[Firing]) -> None:
        """Publish the firings the core says are due (not acknowledged nor being published), concurrently.

        Each one is retried until the broker acknowledged it; then all their "published" marks go
        to the state table and the changelog is flushed and awaited once: a crash after this must
        not re-notify. A batch sends only once the batch before it was acknowledged (so
        interventions reach the topic in the order they were made, as when batches waited for
        each other); its marks' flush overlaps the next batch's sends.
        """
        todo = self.core.claim(firings)
        if not todo:
            return
        previous, sent = self._sent, asyncio.get_running_loop().create_future()
        self._sent = sent
        try:
            if previous is not None and not previous.done():
                await asyncio.shield(previous)  # shielded: our cancellation must not end the previous one's
            for f in todo:
                self.metrics.rule_firings.labels(f.intervention.rule, f.intervention.mode).inc()
            await asyncio.gather(*(self._send_acked(f.intervention) for f in todo))
            sent.set_result(None)
            now = time.time()
            for f in todo:
                self.core.acknowledged(f)
                iv = f.intervention
                self.metrics.interventions_published.labels(iv.rule, iv.severity).inc()
                if f.event_ts is not None:  # replays after a restart are not latency
                    self.metrics.intervention_latency.observe(max(0.0, now - f.event_ts))
            # the "published" marks on the broker now, not within 20 ms: a crash must not re-notify
            await self.flush_changelog(wait=True)
        finally:
            if not sent.done():
                sent.set_result(None)
            if self._sent is sent:
                self._sent = None
            self.core.release(todo)
        for f in todo:
            iv = f.intervention
            log.info(
                "intervention %s rule=%s v%s severity=%s mode=%s atm=%s",
                iv.id, iv.rule, iv.rule_version, iv.severity, iv.mode, iv.atm_id,
            )

    async def _send_acked(self, iv: Intervention) -> None:
        """Send one intervention and wait for the broker's ack, retrying until the broker is back."""
        delay = 0.2
        while True:
            if self.fenced is not None:
                raise EngineFenced(self.fenced)  # the next app replays it (never acknowledged)
            try:
                fut = await self.interventions.send(key=iv.atm_id.encode(), value=iv.to_json().encode())
                await fut
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # broad on purpose: keep it unacked and retry until the broker is back
                if self.fenced is not None:
                    raise EngineFenced(self.fenced) from exc
                log.warning("publishing intervention %s failed (%r); retrying in %.1f s", iv.id, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    # -- the state table's changelog -------------------------------------------------------------

    def _changelog(self, partition: int, key: str, value: StoredJSON | None) -> None:
        """Queue one changelog record (the JSON bytes Faust's table recovery decodes): the core's sink.

        Faust's own `Table.send_changelog` costs ~0.3 ms a record and even one aiokafka `send()`
        per record ~0.5 ms under load, so records are batched per partition and written with
        `send_batch` every 20 ms, after a batch of events that queued 500 records or made an
        intervention, and before every offset commit (Faust flushes
        its producer first; compat's `FlushHookProducer` flushes us before that): no offset is committed
        before the state records of its events are on the broker, so at-least-once holds.
        """
        payload = None if value is None else json.dumps(value, separators=(",", ":")).encode()
        self._cl_buf[partition].append((json.dumps(key).encode(), payload))
        self._cl_count += 1

    async def flush_changelog(self, *, wait: bool = False) -> None:
        """Write the queued state records, one batch per partition (`wait`: until the broker acked)."""
        if not self._cl_count:
            return
        if self.fenced is not None:
            if wait:
                raise EngineFenced(self.fenced)
            return
        futures: list[Any] = []
        async with self._cl_lock:
            buf, self._cl_buf, self._cl_count = self._cl_buf, defaultdict(list), 0
            producer = app_producer(self.app)
            for partition, records in buf.items():
                batch = producer.create_batch()
                for k, v in records:
                    if batch.append(key=k, value=v, timestamp=None) is None:
                        batch.close()
                        await producer.send_batch(batch, self._changelog_topic, partition=partition)
                        batch = producer.create_batch()
                        batch.append(key=k, value=v, timestamp=None)
                batch.close()
                await producer.send_batch(batch, self._changelog_topic, partition=partition)
                # Tansu 0.6.0 reports a partition's high watermark as the *first* offset of its last
                # batch + 1, so Faust's table recovery (which reads up to the high watermark) would
                # miss the tail of a multi-record batch. A one-record batch after each flush (a
                # tombstone of a key nobody uses) makes the high watermark right again.
                sentinel = producer.create_batch()
                sentinel.append(key=_HW_SENTINEL, value=None, timestamp=None)
                sentinel.close()
                futures.append(await producer.send_batch(sentinel, self._changelog_topic, partition=partition))
        if wait and futures:
            await asyncio.gather(*futures)

    async def _flush_timer(self) -> None:
        await self.flush_changelog()

    # -- assignment and lag ----------------------------------------------------------------------

    def _active_partitions(self) -> set[int]:
        inputs = self.hooks.input_topics
        try:
            assigned = self.app.consumer.assignment()
        except Exception:  # noqa: BLE001 - no consumer (yet, or any more): nothing is assigned
            return set()
        return {tp.partition for tp in assigned if tp.topic in inputs}

    async def _on_recover(self) -> None:
        """After Faust recovered the table for a new assignment: rebuild rule state before processing."""
        if self.fenced is not None:
            return
        started = time.monotonic()
        await self._publications_done()  # their marks are part of the state the rules are rebuilt from
        recovery = self.core.recover(self._active_partitions())
        await self._publish_many(recovery.pending)
        self.metrics.restores.inc()
        self.metrics.state_events.set(len(self.table.data))
        log.info(
            "rule state rebuilt for partitions %s from %d recent events in %.2f s (%d unacknowledged "
            "interventions re-published)",
            recovery.partitions, recovery.events, time.monotonic() - started, len(recovery.pending),
        )
        self.restored += 1

    def _labelled(self, topic: str) -> TopicMetrics:
        m = self._topic_metrics.get(topic)
        if m is None:
            m = self._topic_metrics[topic] = TopicMetrics(self.metrics, topic)
        return m

    async def _report_lag(self) -> None:
        consumer = self.app.consumer
        for (topic, partition), position in list(self._positions.items()):
            # a partition revoked or a consumer being replaced has no high-water mark: skip it this time
            with contextlib.suppress(Exception):
                tp = faust.types.TP(topic, partition)
                high = consumer.highwater(tp)
                if high is not None:
                    self.metrics.consumer_lag.labels(topic, str(partition)).set(max(0, high - position))

