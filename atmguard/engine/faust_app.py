"""The engine: a Faust app where behaviour facts meet bank events and rules make interventions.

Topics (names and partition count from `atmguard.core.settings`), all keyed by atm_id and
co-partitioned, so every event of one ATM reaches the same worker and the same agent:

    facts topic ─┐
                 ├─► agent `evaluate` ─► RuleEngine.feed ─► interventions topic
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
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import MISSING, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

from atmguard.core import runtime_policy
from atmguard.core.contracts import BankEvent, BehaviorFact, Intervention, parse_event
from atmguard.core.errors import EventError, RuleSetError
from atmguard.engine.metrics import engine_metrics
from atmguard.kafka import publisher
from atmguard.kafka.pacing import pace_fetches
from atmguard.kafka.topics import event_key

if TYPE_CHECKING:
    from atmguard.core.settings import Settings

log = logging.getLogger("atmguard.engine")

Event = BehaviorFact | BankEvent


# --- Faust latency patch ---------------------------------------------------------------------
# Faust 0.15.3 hardcodes `fetch_max_wait_ms=1500` on the aiokafka consumer it creates
# (faust/transport/drivers/aiokafka.py, AIOKafkaConsumerThread._create_worker_consumer) and no
# setting reaches it. Tansu holds a fetch for about half of that even when data waits, which
# made send-to-agent p50 ~380 ms. We subclass the consumer thread and lower it on the consumer
# right after Faust creates it (before `start()`, which is when aiokafka builds its Fetcher).
# Cost: ~5% of a core idle for worker and broker at 10 ms.

FETCH_MAX_WAIT_MS = 10
SWEEP_SLACK_S = 300.0
"""Events older than (newest event time - this - the longest rule window) are dropped from rule state."""


class _LowLatencyConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    fetch_max_wait_ms: int = FETCH_MAX_WAIT_MS

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = int(self.app.conf.atmguard_fetch_max_wait_ms)  # type: ignore[attr-defined]
        return consumer

    async def on_start(self) -> None:
        await super().on_start()
        pace_fetches(self._consumer)  # the embedded broker's fetch cost grows with what it keeps (kafka/pacing.py)

    async def seek_to_committed(self) -> Any:
        """Seek to the committed offsets; an input partition with none goes back to its beginning.

        aiokafka's `seek_to_committed` leaves a partition where it is when nothing (or 0) was
        committed. Records of an input partition fetched while Faust recovered the table are
        taken from the consumer and dropped by Faust, so after a restart with nothing committed
        yet they were skipped for good (found by tests/engine/test_resets.py under load: the
        transfer of an interrupted batch never came again). Nothing committed means "from the
        beginning" here (`consumer_auto_offset_reset="earliest"`).
        """
        return await self.call_thread(self._seek_to_committed_or_beginning)

    async def _seek_to_committed_or_beginning(self) -> Any:
        consumer = self._ensure_consumer()
        committed = await consumer.seek_to_committed()
        inputs: set[str] = getattr(self.app.conf, "atmguard_input_topics", set())
        fresh = [tp for tp, offset in committed.items() if not offset and tp.topic in inputs]
        if fresh:
            await consumer.seek_to_beginning(*fresh)
        return committed

    async def _commit(self, offsets: Any) -> bool:
        """Commit in the consumer thread, bounded, and never for a fenced engine.

        aiokafka retries a commit for as long as the error is retriable; after the in-memory
        broker restarted that is UnknownTopicOrPartition, forever, and Faust's stop waits for
        it (the reset hung). A commit that does not finish in time is given up: the records
        are delivered again (at least once), never lost.
        """
        if _fenced(self.app):
            return False
        task = asyncio.ensure_future(super()._commit(offsets))
        commits = _commit_tasks(self)
        commits.add(task)
        task.add_done_callback(commits.discard)
        try:
            done, _ = await asyncio.wait({task}, timeout=float(self.app.conf.atmguard_commit_timeout_s))  # type: ignore[attr-defined]
        finally:
            if not task.done():
                task.cancel()
        if task in done and not task.cancelled():
            return bool(task.result())
        if not _fenced(self.app):
            log.warning("offset commit did not finish within %.0f s: not committed, those records will be "
                        "delivered again", float(self.app.conf.atmguard_commit_timeout_s))  # type: ignore[attr-defined]
        return False

    async def on_thread_stop(self) -> None:
        """Stop the aiokafka consumer; survive its stop letting out a CancelledError.

        aiokafka 0.14's Fetcher.close cancels the fetch requests in flight and awaits them,
        so when one was backing off (broker down or restarting) consumer.stop() raises
        CancelledError: the thread then ends without telling Faust, whose stop waits its
        full 60 s shutdown timeout (part of the reset hang).
        """
        try:
            await super().on_thread_stop()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            consumer = getattr(self, "_consumer", None)
            client = getattr(consumer, "_client", None)
            if client is not None:
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await client.close()

    def cancel_commits(self) -> None:
        """Give up the commits running in the consumer thread now (callable from any thread)."""
        tasks = list(_commit_tasks(self))
        if tasks:
            with contextlib.suppress(RuntimeError):  # the thread's loop is closed: nothing runs
                self.thread_loop.call_soon_threadsafe(lambda: [t.cancel() for t in tasks])


def _commit_tasks(thread: Any) -> set[asyncio.Future[Any]]:
    tasks: set[asyncio.Future[Any]] | None = getattr(thread, "_atmguard_commits", None)
    if tasks is None:
        tasks = thread._atmguard_commits = set()
    return tasks


def _fenced(app: Any) -> bool:
    return bool(getattr(app, "atmguard_fenced", False))


class _LowLatencyConsumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _LowLatencyConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def commit(self, topics: Any = None, start_new_transaction: bool = True) -> bool:
        """Faust's commit (periodic, on rebalance, on stop), refused once the engine is fenced."""
        if _fenced(self.app):
            return False
        return bool(await super().commit(topics, start_new_transaction=start_new_transaction))


class _FlushHookProducer(faust_aiokafka.Producer):
    """Faust flushes its producer before every offset commit: flush our batched state records first."""

    async def flush(self) -> None:
        if _fenced(self.app):
            return  # nothing of a fenced engine may reach the broker (see Engine.fence)
        hook = getattr(self.app, "atmguard_before_flush", None)
        if hook is not None:
            await hook()
        await super().flush()


class _LowLatencyTransport(faust_aiokafka.Transport):
    Consumer = _LowLatencyConsumer
    Producer = _FlushHookProducer


class FaustApp(faust.App):
    """faust.App whose Kafka consumer waits at most `atmguard_fetch_max_wait_ms` per fetch."""

    def _new_transport(self) -> Any:
        return _LowLatencyTransport(self.conf.broker_consumer, self)


# --- The rules, behind the interface of atmguard.rules ----------------------------------------


class RuleEngineLike(Protocol):
    def feed(self, event: Event) -> list[Intervention]: ...
    def swap(self, new_ruleset: Any) -> None: ...
    def sweep(self, now: Any) -> int: ...
    def close(self) -> None: ...


class _NoRules:
    """Stands in when there is no rule pack (empty folder): consumes events, fires nothing."""

    def feed(self, event: Event) -> list[Intervention]:
        return []

    def swap(self, new_ruleset: Any) -> None:
        return None

    def sweep(self, now: Any) -> int:
        return 0

    def close(self) -> None:
        return None


def load_ruleset(rules_dir: Path) -> Any | None:
    """The rule pack in `rules_dir` (RuleSetError if invalid), or None when there are no rule files."""
    try:
        from atmguard.rules import load_rules
    except ImportError:
        from atmguard.rules.ruleset import load_rules

    if not rules_dir.exists() or not any(rules_dir.rglob("*.y*ml")):
        return None
    return load_rules([rules_dir])


def make_rule_engine(ruleset: Any | None) -> RuleEngineLike:
    """A RuleEngine over `ruleset` (the only thing wrapping durable_rules), or one that fires nothing."""
    if ruleset is None:
        return _NoRules()
    try:
        from atmguard.rules import RuleEngine
    except ImportError:
        from atmguard.rules.runtime import RuleEngine

    engine: RuleEngineLike = RuleEngine(ruleset)
    return engine


def longest_window_s(ruleset: Any | None) -> float:
    """The longest `within:` of the rules (0 when none)."""
    longest = 0.0
    for rule in getattr(ruleset, "rules", None) or []:
        within = getattr(getattr(rule, "when", None), "within", None) or 0.0
        longest = max(longest, float(within), float(getattr(rule, "cooldown", 0.0) or 0.0))
    return longest


# --- Options ------------------------------------------------------------------------------------


@dataclass
class EngineOptions:
    """How one engine worker runs; the defaults are the tuned values from ../shared/NOTES.md."""

    rules_dir: Path = Path("rules")
    data_dir: Path = Path(".atmguard")
    app_id: str = "atmguard-engine"
    dedupe_ttl_s: float = 600.0
    fetch_max_wait_ms: int = FETCH_MAX_WAIT_MS
    session_timeout_s: float = 3.0
    heartbeat_s: float = 0.5
    commit_interval_s: float = 0.2
    watch_rules: bool = True
    reload_debounce_ms: int = 300
    sweep_interval_s: float = 5.0
    batch_max: int = 500
    batch_within_ms: float = 5.0
    epoch_check_s: float = 0.5
    """How often a worker checks whether the broker lost its data (restarted in-memory broker)."""
    commit_timeout_s: float = 10.0
    """An offset commit not done by then is given up (its records are delivered again)."""
    stop_timeout_s: float = 15.0
    """A Faust app not stopped by then is abandoned (its consumer thread is ended)."""
    extra_conf: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_env(cls, **values: Any) -> EngineOptions:
        """Options with tuning from ATMGUARD_ENGINE_* variables (e.g. ATMGUARD_ENGINE_SESSION_TIMEOUT_S=2)."""
        import os

        for name, default in cls.__dataclass_fields__.items():
            raw = os.environ.get(f"ATMGUARD_ENGINE_{name.upper()}")
            if raw is None or name in values or name == "extra_conf":
                continue
            kind = type(default.default) if default.default is not MISSING else str
            values[name] = raw.lower() in ("1", "true", "yes") if kind is bool else kind(raw)
        return cls(**values)


# --- The engine -------------------------------------------------------------------------------


def _epoch_s(value: Any) -> float:
    return float(value.timestamp())


class EngineFenced(Exception):  # noqa: N818 - a state, not a failure
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
    """One engine worker: the Faust app, its topics, agent and state table, and the rules."""

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
        self.app = FaustApp(
            app_id_for(options, epoch),
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
        # read by _LowLatencyConsumerThread; Settings objects accept extra attributes
        self.app.conf.atmguard_fetch_max_wait_ms = options.fetch_max_wait_ms  # type: ignore[attr-defined]
        self.app.conf.atmguard_commit_timeout_s = options.commit_timeout_s  # type: ignore[attr-defined]
        self.app.conf.atmguard_input_topics = {settings.topic_facts, settings.topic_bank}  # type: ignore[attr-defined]
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

        self.ruleset: Any | None = None
        self.rule_engine: RuleEngineLike = _NoRules()
        self.ttl_s = options.dedupe_ttl_s
        self._expiry: dict[int, list[tuple[float, str]]] = defaultdict(list)
        self._max_ts: dict[int, float] = defaultdict(float)
        self._positions: dict[tuple[str, int], int] = {}
        self._last_sweep = time.monotonic()
        self._latest_ts: Any = None
        self.processed = 0
        self.consumed = 0
        self._topic_metrics: dict[str, _TopicMetrics] = {}
        self._changelog_topic = self.table.changelog_topic.get_topic_name()
        self._cl_buf: dict[int, list[tuple[bytes, bytes | None]]] = defaultdict(list)
        self._cl_count = 0
        self._cl_lock = asyncio.Lock()
        self._inflight: set[str] = set()
        self._seq = 0
        self.app.atmguard_before_flush = self.flush_changelog  # type: ignore[attr-defined]
        self.app.timer(0.02)(self._flush_timer)
        self.published = 0
        self.restored = 0
        self._load_initial_rules()

    # -- fencing ---------------------------------------------------------------------------------

    def fence(self, reason: str, *, abort_producer: bool = False) -> None:
        """From now on commit no offset and write nothing; batches still delivered are skipped.

        Used before the app is replaced: after the broker lost its data (`abort_producer`: the
        records still pending are failed, they belong to the old broker and, retried into the
        new one, would break its partitions; see publisher.abort_producer), and after a batch
        was interrupted mid-way (its records were never fully processed, and Faust acks a
        batch whatever happened to it: committing now could skip them). Records fenced out
        are delivered again to the next app from the last committed offset (at least once);
        the state table turns those it already saw into duplicates.
        """
        if self.fenced is None:
            self.fenced = reason
            log.info("engine fenced (%s): no more commits or writes from this app", reason)
        self.app.atmguard_fenced = True  # type: ignore[attr-defined]
        consumer = getattr(self.app, "_consumer", None)
        thread = getattr(consumer, "_thread", None)
        if isinstance(thread, _LowLatencyConsumerThread):
            thread.cancel_commits()
        if abort_producer:
            producer = getattr(getattr(self.app, "_producer", None), "_producer", None)
            if producer is not None:
                publisher.abort_producer(producer, EngineFenced(reason))

    # -- rules ----------------------------------------------------------------------------------

    def _load_initial_rules(self) -> None:
        try:
            ruleset = load_ruleset(self.options.rules_dir)
        except ImportError as exc:
            log.warning("rules runtime not available (%s); the engine consumes events but fires nothing", exc)
            return
        except RuleSetError as exc:
            # keep consuming (nothing accepted is lost) and say exactly where the rules are wrong;
            # the folder is watched, so fixing the file loads the rules
            self.metrics.rule_reload_failures.inc()
            for line in [str(e) for e in exc.errors] or [str(exc)]:
                log.error("invalid rules, the engine fires NOTHING until they are fixed: %s", line)
            ruleset = None
        self._install(ruleset)

    def _install(self, ruleset: Any | None) -> None:
        self.ruleset = ruleset
        self.rule_engine = make_rule_engine(ruleset)
        self.ttl_s = max(self.options.dedupe_ttl_s, longest_window_s(ruleset) + 60.0)
        self.metrics.rules_loaded.set(len(getattr(ruleset, "rules", []) or []))
        if ruleset is None:
            log.warning("no rules loaded from %s: the engine fires nothing until valid rules are there",
                        self.options.rules_dir)
        else:
            log.info(
                "rules loaded from %s: %d rules, digest %s",
                self.options.rules_dir,
                len(ruleset.rules),
                getattr(ruleset, "digest", "?"),
            )

    def reload_rules(self) -> bool:
        """Validate and compile the rules folder; swap atomically, or keep the old rules and say why."""
        try:
            ruleset = load_ruleset(self.options.rules_dir)
        except RuleSetError as exc:
            self.metrics.rule_reload_failures.inc()
            for line in [str(e) for e in exc.errors] or [str(exc)]:
                log.error("rule reload failed, old rules keep running: %s", line)
            return False
        except Exception as exc:  # noqa: BLE001 - a broken file must never stop the engine
            self.metrics.rule_reload_failures.inc()
            log.error("rule reload failed, old rules keep running: %s", exc)
            return False
        old_digest = getattr(self.ruleset, "digest", None)
        if ruleset is not None and old_digest == getattr(ruleset, "digest", None):
            return True
        try:
            if ruleset is None or isinstance(self.rule_engine, _NoRules):
                # from no rules to rules (or back): a fresh engine; state is rebuilt from the table
                old = self.rule_engine
                self._install(ruleset)
                self._replay_into(self.rule_engine, publish=False)
                old.close()
            else:
                self.rule_engine.swap(ruleset)  # atomic: we are on the loop, between two events
                self.ruleset = ruleset
                self.ttl_s = max(self.options.dedupe_ttl_s, longest_window_s(ruleset) + 60.0)
                self.metrics.rules_loaded.set(len(ruleset.rules))
        except RuleSetError as exc:
            self.metrics.rule_reload_failures.inc()
            for line in [str(e) for e in exc.errors] or [str(exc)]:
                log.error("rule reload failed, old rules keep running: %s", line)
            return False
        except Exception as exc:  # noqa: BLE001
            self.metrics.rule_reload_failures.inc()
            log.error("rule reload failed, old rules keep running: %s", exc)
            return False
        self.metrics.rule_reloads.inc()
        log.info(
            "rules reloaded: %d rules, digest %s",
            len(getattr(ruleset, "rules", []) or []),
            getattr(ruleset, "digest", "-"),
        )
        return True

    async def _watch_rules(self) -> None:
        if not self.options.watch_rules:
            return
        from watchfiles import awatch

        folder = Path(self.options.rules_dir)
        folder.mkdir(parents=True, exist_ok=True)
        log.info("watching %s for rule changes", folder)
        async for _changes in awatch(folder, debounce=self.options.reload_debounce_ms, step=50, recursive=True):
            self.reload_rules()

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
        async for events in stream.take_events(max(1, self.options.batch_max), within=within):
            finished = False
            try:
                await self.handle_batch(events)
                finished = True
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - one poisoned batch must not stop every ATM
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

    async def handle(self, message: Any, raw: bytes) -> None:
        """Process one record (a batch of one)."""
        await self._process([(message, raw)])

    async def handle_batch(self, events: Sequence[Any]) -> None:
        """Process the Faust events of one agent step (none once fenced: they come again)."""
        if self.fenced is not None:
            return
        await self._process([(event.message, event.value) for event in events])

    async def _process(self, records: Sequence[tuple[Any, Any]]) -> None:
        """Parse, dedupe and record a batch in the table, evaluate the rules on it, publish its firings.

        The rules are fed the whole batch with no await in between, so a hot reload or a state
        rebuild (both run on this loop) happens between batches, never inside one.
        """
        data = self.table.data
        now = time.time()
        seq = max(time.time_ns(), self._seq)
        counts: dict[tuple[str, str], int] = defaultdict(int)
        admitted: list[tuple[Event, int, float]] = []
        batch_max_ts: dict[int, float] = {}
        for message, raw in records:
            topic, partition = message.topic, message.partition
            self.consumed += 1
            self._positions[(topic, partition)] = message.offset + 1
            m = self._labelled(topic)
            if message.timestamp:
                m.lag.observe(max(0.0, now - message.timestamp))
            try:
                ev = parse_event(raw, source=f"{topic}[{partition}]@{message.offset}")
            except EventError as exc:
                self.metrics.events_invalid.labels(topic).inc()
                log.warning("skipped a record that does not fit the contract: %s", exc)
                continue
            counts[(topic, ev.type)] += 1
            rid = _record_id(ev)
            if rid in data:
                m.duplicate.inc()
                continue
            ts = _epoch_s(ev.ts)
            text = raw.decode() if isinstance(raw, bytes | bytearray) else ev.to_json()
            seq += 1  # "s": arrival order (the replay order), strictly increasing within and across batches
            self._put(partition, rid, {"k": event_key(ev), "t": ts, "s": seq, "p": partition, "v": text})
            admitted.append((ev, partition, ts))
            if ts > batch_max_ts.get(partition, float("-inf")):
                batch_max_ts[partition] = ts
            if self._latest_ts is None or ev.ts > self._latest_ts:
                self._latest_ts = ev.ts
        self._seq = seq
        for (topic, kind), n in counts.items():
            self._labelled(topic).events_in(kind).inc(n)

        engine = self.rule_engine
        fired: list[tuple[Intervention, int, float | None]] = []
        for ev, partition, ts in admitted:
            try:
                interventions = engine.feed(ev)
            except Exception:  # noqa: BLE001 - one event the rules choke on must not lose the batch
                log.exception("rules failed on event %s (%s)", ev.id, ev.type)
                continue
            self.processed += 1
            fired.extend((iv, partition, ts) for iv in interventions)
        for partition, ts in batch_max_ts.items():
            self._expire(partition, ts)
        self.metrics.state_events.set(len(data))
        if time.monotonic() - self._last_sweep > self.options.sweep_interval_s and self._latest_ts is not None:
            self._last_sweep = time.monotonic()
            # watermark: the newest event time minus a slack for late ATMs (skewed clocks, delays)
            self.rule_engine.sweep(self._latest_ts - timedelta(seconds=SWEEP_SLACK_S))
        if fired:
            await self._publish_many(fired)
        elif self._cl_count >= CHANGELOG_BATCH:
            await self.flush_changelog()

    async def _publish_once(self, iv: Intervention, partition: int, event_ts: float | None = None) -> None:
        """Publish unless already acknowledged before; `event_ts`: time of the event that completed the match."""
        await self._publish_many([(iv, partition, event_ts)])

    async def _publish_many(self, items: Sequence[tuple[Intervention, int, float | None]]) -> None:
        """Publish the interventions not acknowledged (nor being published) before, concurrently.

        Each one is retried until the broker acknowledged it; then all their "published" marks go
        to the state table and the changelog is flushed and awaited once: a crash after this must
        not re-notify. `event_ts`: time of the event that completed the match (None for replays).
        """
        data = self.table.data
        todo: list[tuple[Intervention, int, float | None]] = []
        for iv, partition, event_ts in items:
            if "i:" + iv.id in data or iv.id in self._inflight:
                continue
            self._inflight.add(iv.id)
            todo.append((iv, partition, event_ts))
        if not todo:
            return
        try:
            for iv, _, _ in todo:
                self.metrics.rule_firings.labels(iv.rule, iv.mode).inc()
            await asyncio.gather(*(self._send_acked(iv) for iv, _, _ in todo))
            now = time.time()
            for iv, partition, event_ts in todo:
                self.published += 1
                self.metrics.interventions_published.labels(iv.rule, iv.severity).inc()
                if event_ts is not None:  # replays after a restart are not latency
                    self.metrics.intervention_latency.observe(max(0.0, now - event_ts))
                self._put(partition, "i:" + iv.id, {"k": iv.atm_id, "t": _epoch_s(iv.ts), "p": partition})
            # the "published" marks on the broker now, not within 20 ms: a crash must not re-notify
            await self.flush_changelog(wait=True)
        finally:
            for iv, _, _ in todo:
                self._inflight.discard(iv.id)
        for iv, _, _ in todo:
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
            except Exception as exc:  # noqa: BLE001 - keep the event unacked and retry until the broker is back
                if self.fenced is not None:
                    raise EngineFenced(self.fenced) from exc
                log.warning("publishing intervention %s failed (%r); retrying in %.1f s", iv.id, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    # -- the state table -------------------------------------------------------------------------

    def _put(self, partition: int, key: str, value: dict[str, Any]) -> None:
        """Set a table key and queue its changelog record to *this* partition explicitly."""
        self.table.data[key] = value
        self._changelog(partition, key, value)
        heapq.heappush(self._expiry[partition], (value["t"], key))

    def _changelog(self, partition: int, key: str, value: dict[str, Any] | None) -> None:
        """Queue one changelog record (the JSON bytes Faust's table recovery decodes).

        Faust's own `Table.send_changelog` costs ~0.3 ms a record and even one aiokafka `send()`
        per record ~0.5 ms under load, so records are batched per partition and written with
        `send_batch` every 20 ms, after a batch of events that queued 500 records or made an
        intervention, and before every offset commit (Faust flushes
        its producer first; `_FlushHookProducer` flushes us before that): no offset is committed
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
            producer = self.app.producer._ensure_producer()  # type: ignore[attr-defined]
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

    def _labelled(self, topic: str) -> _TopicMetrics:
        m = self._topic_metrics.get(topic)
        if m is None:
            m = self._topic_metrics[topic] = _TopicMetrics(self.metrics, topic)
        return m

    def _expire(self, partition: int, ts: float) -> None:
        """Forget records of this partition older than the TTL (event time of the partition)."""
        if ts > self._max_ts[partition]:
            self._max_ts[partition] = ts
        horizon = self._max_ts[partition] - self.ttl_s
        heap = self._expiry[partition]
        data = self.table.data
        while heap and heap[0][0] < horizon:
            t, key = heapq.heappop(heap)
            rec = data.get(key)
            if rec is not None and rec.get("t") == t and rec.get("p") == partition:
                data.pop(key, None)
                self._changelog(partition, key, None)

    def _active_partitions(self) -> set[int]:
        inputs: set[str] = self.app.conf.atmguard_input_topics  # type: ignore[attr-defined]
        try:
            assigned = self.app.consumer.assignment()
        except Exception:  # noqa: BLE001
            return set()
        return {tp.partition for tp in assigned if tp.topic in inputs}

    async def _on_recover(self) -> None:
        """After Faust recovered the table for a new assignment: rebuild rule state before processing."""
        if self.fenced is not None:
            return
        started = time.monotonic()
        active = self._active_partitions()
        data = self.table.data
        for key in [k for k, v in data.items() if isinstance(v, dict) and v.get("p") not in active]:
            data.pop(key, None)  # revoked partition: its owner now has these records
        self._expiry = defaultdict(list)
        for key, rec in data.items():
            if isinstance(rec, dict) and "t" in rec:
                heapq.heappush(self._expiry[rec["p"]], (rec["t"], key))
                self._max_ts[rec["p"]] = max(self._max_ts[rec["p"]], rec["t"])
        fresh = make_rule_engine(self.ruleset)
        pending = self._replay_into(fresh, publish=True)
        old, self.rule_engine = self.rule_engine, fresh
        old.close()
        await self._publish_many([(iv, partition, None) for iv, partition in pending])
        self.metrics.restores.inc()
        self.metrics.state_events.set(len(data))
        events = sum(1 for k in data if str(k).startswith(("e:", "b:")))
        log.info(
            "rule state rebuilt for partitions %s from %d recent events in %.2f s (%d unacknowledged "
            "interventions re-published)",
            sorted(active), events, time.monotonic() - started, len(pending),
        )
        self.restored += 1

    def _replay_into(self, engine: RuleEngineLike, *, publish: bool) -> list[tuple[Intervention, int]]:
        """Feed the table's recent events, in arrival order, to `engine`; return unpublished firings."""
        data = self.table.data
        records = sorted(
            (rec for key, rec in data.items() if str(key).startswith(("e:", "b:")) and isinstance(rec, dict)),
            key=lambda r: r.get("s", 0),
        )
        pending: list[tuple[Intervention, int]] = []
        for rec in records:
            try:
                ev = parse_event(rec["v"])
            except (EventError, KeyError):
                continue
            for iv in engine.feed(ev):
                if publish and "i:" + iv.id not in data:
                    pending.append((iv, int(rec["p"])))
        return pending

    async def _report_lag(self) -> None:
        consumer = self.app.consumer
        for (topic, partition), position in list(self._positions.items()):
            with contextlib.suppress(Exception):
                tp = faust.types.TP(topic, partition)
                high = consumer.highwater(tp)
                if high is not None:
                    self.metrics.consumer_lag.labels(topic, str(partition)).set(max(0, high - position))


_HW_SENTINEL = json.dumps("~hw").encode()
CHANGELOG_BATCH = 500
"""Queued state records that make a batch flush them at once (else the 20 ms timer does)."""


class _TopicMetrics:
    """Metric children of one input topic, resolved once (labels() costs ~20 us a call)."""

    def __init__(self, metrics: Any, topic: str) -> None:
        self.lag = metrics.processing_lag.labels(topic)
        self.duplicate = metrics.events_duplicate.labels(topic)
        self._events_in = metrics.events_in
        self._topic = topic
        self._by_type: dict[str, Any] = {}

    def events_in(self, kind: str) -> Any:
        child = self._by_type.get(kind)
        if child is None:
            child = self._by_type[kind] = self._events_in.labels(self._topic, kind)
        return child


def _record_id(ev: Event) -> str:
    """The table key of a processed event: facts by id, bank events by bank and id."""
    if isinstance(ev, BankEvent):
        return f"b:{ev.bank_id}:{ev.id}"
    return f"e:{ev.id}"


def intervention_from_record(raw: bytes | str) -> Intervention:
    """An Intervention from its topic value."""
    return Intervention.model_validate(json.loads(raw))
