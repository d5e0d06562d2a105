# Every private Faust / aiokafka name atmguard touches, and the only file that touches them:
#
#   faust-streaming 0.15.3
#     faust.App                ._new_transport  ._consumer  ._producer
#     drivers.aiokafka.Transport             .Consumer  .Producer (classes it builds)
#     drivers.aiokafka.Consumer              ._new_consumer_thread  ._thread  .commit
#     drivers.aiokafka.AIOKafkaConsumerThread
#                              ._create_worker_consumer  ._commit  ._consumer  ._ensure_consumer
#                              .seek_to_committed  .on_start  .on_thread_stop  .call_thread  .thread_loop
#     drivers.aiokafka.Producer              ._producer  ._ensure_producer  .flush
#   aiokafka 0.14.0
#     AIOKafkaConsumer         ._fetch_max_wait_ms  ._fetcher  ._client
#     consumer.fetcher.Fetcher ._proc_fetch_request  ._client
#     AIOKafkaProducer         ._sender  ._message_accumulator
#     producer.sender.Sender   .sender_task
#     producer.message_accumulator.MessageAccumulator  ._batches  ._pending_batches  .fail_all
#     producer.message_accumulator.MessageBatch        .future  ._drain_waiter
"""The seam between atmguard and the internals of Faust and aiokafka.

Each patch or private access below is one named function or class that says why it exists
(the failures they answer were found under load, see their docstrings) and what it relies
on. `check_versions()` runs where a Faust app, a paced consumer or an abortable producer is
made: it refuses to start (CompatError) when the installed faust-streaming or aiokafka is not
the release these patches were written for, or when a private name they use is gone, so an
upgrade cannot silently turn a safeguard off. Upgrading either package means re-reading this
file against the new release, then changing `WRITTEN_FOR` (and the pin in pyproject.toml).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.metadata
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiokafka
import faust
from aiokafka.consumer.fetcher import Fetcher
from aiokafka.producer.message_accumulator import MessageAccumulator, MessageBatch
from aiokafka.producer.sender import Sender
from faust.transport.consumer import ThreadDelegateConsumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from mode.threads import ServiceThread

from atmguard.core.errors import CompatError
from atmguard.kafka.pacing import DEFAULT_MAX_WAIT_S, PacedFetch, pacing_ratio

log = logging.getLogger("atmguard.engine")

WRITTEN_FOR = {"faust-streaming": "0.15.3", "aiokafka": "0.14.0"}
"""The releases whose internals the patches below were read from and tested against."""


# --- The start-up check ------------------------------------------------------------------------


@dataclass(frozen=True)
class PrivateName:
    """One private name a patch relies on: `owner.name`, on the class or set on its instances."""

    package: str
    owner: type
    name: str
    used_by: str
    on_instances: bool = False
    """Set in the owner's methods (`self.name = ...`), not a class attribute: found in its source."""

    @property
    def dotted(self) -> str:
        return f"{self.owner.__module__}.{self.owner.__qualname__}.{self.name}"

    def exists(self) -> bool:
        if hasattr(self.owner, self.name):
            return True
        if not self.on_instances:
            return False
        try:
            source = inspect.getsource(self.owner)
        except (OSError, TypeError):
            # installed without sources (only .pyc): the exact version match is the guarantee then
            return True
        return f"self.{self.name} =" in source


_FAUST, _AIOKAFKA = "faust-streaming", "aiokafka"
_THREAD = faust_aiokafka.AIOKafkaConsumerThread

PRIVATE_NAMES: tuple[PrivateName, ...] = (
    PrivateName(_FAUST, faust.App, "_new_transport", "FaustApp (the engine's transport)"),
    PrivateName(_FAUST, faust.App, "_consumer", "cancel_commits, abandon_consumer_thread"),
    PrivateName(_FAUST, faust.App, "_producer", "abort_app_producer"),
    PrivateName(_FAUST, faust_aiokafka.Transport, "Consumer", "EngineTransport"),
    PrivateName(_FAUST, faust_aiokafka.Transport, "Producer", "EngineTransport"),
    PrivateName(_FAUST, faust_aiokafka.Consumer, "_new_consumer_thread", "GuardedConsumer"),
    PrivateName(_FAUST, faust_aiokafka.Consumer, "commit", "GuardedConsumer (fenced commits)"),
    PrivateName(_FAUST, ThreadDelegateConsumer, "_thread", "cancel_commits, abandon_consumer_thread",
                on_instances=True),
    PrivateName(_FAUST, _THREAD, "_create_worker_consumer", "LowLatencyConsumerThread (fetch wait)"),
    PrivateName(_FAUST, _THREAD, "_commit", "LowLatencyConsumerThread (bounded commits)"),
    PrivateName(_FAUST, _THREAD, "_consumer", "LowLatencyConsumerThread.on_thread_stop"),
    PrivateName(_FAUST, _THREAD, "_ensure_consumer", "LowLatencyConsumerThread"),
    PrivateName(_FAUST, _THREAD, "seek_to_committed", "LowLatencyConsumerThread (seek to beginning)"),
    PrivateName(_FAUST, _THREAD, "on_start", "LowLatencyConsumerThread (pacing)"),
    PrivateName(_FAUST, _THREAD, "on_thread_stop", "LowLatencyConsumerThread (stop after CancelledError)"),
    PrivateName(_FAUST, _THREAD, "call_thread", "LowLatencyConsumerThread.seek_to_committed"),
    PrivateName(_FAUST, ServiceThread, "thread_loop", "cancel_commits, abandon_consumer_thread", on_instances=True),
    PrivateName(_FAUST, faust_aiokafka.Producer, "_producer", "abort_app_producer"),
    PrivateName(_FAUST, faust_aiokafka.Producer, "_ensure_producer", "app_producer (changelog batches)"),
    PrivateName(_FAUST, faust_aiokafka.Producer, "flush", "FlushHookProducer"),
    PrivateName(_AIOKAFKA, aiokafka.AIOKafkaConsumer, "_fetch_max_wait_ms", "set_fetch_max_wait", on_instances=True),
    PrivateName(_AIOKAFKA, aiokafka.AIOKafkaConsumer, "_fetcher", "pace_fetches", on_instances=True),
    PrivateName(_AIOKAFKA, aiokafka.AIOKafkaConsumer, "_client", "LowLatencyConsumerThread.on_thread_stop",
                on_instances=True),
    PrivateName(_AIOKAFKA, Fetcher, "_proc_fetch_request", "pace_fetches"),
    PrivateName(_AIOKAFKA, Fetcher, "_client", "pace_fetches", on_instances=True),
    PrivateName(_AIOKAFKA, aiokafka.AIOKafkaProducer, "_sender", "abort_producer", on_instances=True),
    PrivateName(_AIOKAFKA, aiokafka.AIOKafkaProducer, "_message_accumulator", "abort_producer", on_instances=True),
    PrivateName(_AIOKAFKA, Sender, "sender_task", "abort_producer"),
    PrivateName(_AIOKAFKA, MessageAccumulator, "_batches", "abort_producer", on_instances=True),
    PrivateName(_AIOKAFKA, MessageAccumulator, "_pending_batches", "abort_producer", on_instances=True),
    PrivateName(_AIOKAFKA, MessageAccumulator, "fail_all", "abort_producer"),
    PrivateName(_AIOKAFKA, MessageBatch, "future", "abort_producer", on_instances=True),
    PrivateName(_AIOKAFKA, MessageBatch, "_drain_waiter", "abort_producer", on_instances=True),
)


def installed_version(package: str) -> str:
    """The installed version of a distribution (`importlib.metadata`), "not installed" if absent."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


@functools.cache
def check_versions() -> None:
    """Refuse to go on (CompatError) unless Faust and aiokafka are the releases the patches expect.

    Done once per process (reading the libraries' sources takes ~0.1 s, and every Faust app,
    publisher and follower asks): the installed packages do not change under a running process.
    A failed check is not remembered (functools.cache keeps no exception), so it fails again.
    """
    for package, expected in WRITTEN_FOR.items():
        found = installed_version(package)
        if found != expected:
            raise CompatError(package=package, found=found, expected=expected)
    for private in PRIVATE_NAMES:
        if not private.exists():
            raise CompatError(package=private.package, found=installed_version(private.package),
                              expected=WRITTEN_FOR[private.package], missing=private.dotted, used_by=private.used_by)


def _private(obj: Any, name: str, package: str = _AIOKAFKA) -> Any:
    """`obj.name`, or CompatError naming it: a patch never silently skips a name that moved."""
    try:
        return getattr(obj, name)
    except AttributeError:
        raise CompatError(package=package, found=installed_version(package), expected=WRITTEN_FOR[package],
                          missing=f"{type(obj).__module__}.{type(obj).__qualname__}.{name}") from None


# --- aiokafka consumer: the fetch wait and fetch pacing ------------------------------------------


def set_fetch_max_wait(consumer: aiokafka.AIOKafkaConsumer, wait_ms: int) -> None:
    """Lower how long the broker may hold one fetch, on a consumer not started yet.

    Faust 0.15.3 hardcodes `fetch_max_wait_ms=1500` on the aiokafka consumer it creates and no
    setting reaches it; Tansu 0.6.0 holds a fetch for about half of that even when data waits,
    which made send-to-agent p50 ~380 ms. aiokafka copies `_fetch_max_wait_ms` into the Fetcher
    it builds in `start()`, so setting it before then is enough.
    """
    _private(consumer, "_fetch_max_wait_ms")
    consumer._fetch_max_wait_ms = int(wait_ms)


def pace_fetches(
    consumer: Any,
    *,
    ratio: float | None = None,
    max_wait_s: float = DEFAULT_MAX_WAIT_S,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> bool:
    """Pace a *started* aiokafka consumer's fetches (see kafka/pacing.py); False if pacing is off
    (ATMGUARD_FETCH_PACING=0) or the consumer is paced already.

    Relies on aiokafka 0.14's Fetcher calling `self._proc_fetch_request(assignment, node_id,
    request)` for each fetch of one broker, in a task of its own, and sending it through
    `self._client.send`: both are replaced on this consumer's fetcher only. The time that
    counts is the broker's answer (the round trip of `send` inside that fetch), not the
    decoding of the records after it. `sleep` is how the wait is spent (a test passes its own).
    """
    share = pacing_ratio() if ratio is None else ratio
    if share <= 0:
        return False
    fetcher = _private(consumer, "_fetcher")
    if fetcher is None:
        raise ValueError("pace_fetches needs a started consumer (aiokafka makes its fetcher in start())")
    fetch = _private(fetcher, "_proc_fetch_request")
    client = _private(fetcher, "_client")
    if isinstance(getattr(fetch, "__self__", None), PacedFetch):
        return False
    paced = PacedFetch(fetch, client.send, ratio=share, max_wait_s=max_wait_s, sleep=sleep)
    fetcher._proc_fetch_request = paced.fetch
    client.send = paced.send
    return True


async def seek_to_committed_or_beginning(
    consumer: aiokafka.AIOKafkaConsumer, input_topics: frozenset[str] | set[str]
) -> dict[Any, int | None]:
    """Seek to the committed offsets; an input partition with none goes back to its beginning.

    aiokafka's `seek_to_committed` leaves a partition where it is when nothing (or 0) was
    committed. Records of an input partition fetched while Faust recovered the table are
    taken from the consumer and dropped by Faust, so after a restart with nothing committed
    yet they were skipped for good (found by tests/engine/test_resets.py under load: the
    transfer of an interrupted batch never came again). Nothing committed means "from the
    beginning" here (`consumer_auto_offset_reset="earliest"`).
    """
    committed: dict[Any, int | None] = await consumer.seek_to_committed()
    fresh = [tp for tp, offset in committed.items() if not offset and tp.topic in input_topics]
    if fresh:
        await consumer.seek_to_beginning(*fresh)
    return committed


# --- aiokafka producer: abort -------------------------------------------------------------------


def abort_producer(producer: aiokafka.AIOKafkaProducer, error: BaseException) -> None:
    """Make an aiokafka producer send nothing more: stop its sender, fail its pending records.

    Why: Tansu 0.6.0 (memory storage) acknowledges a produce for a topic it does not know,
    which is what a client retrying across a broker restart sends, advances the partition's
    high watermark, and from then on serves no record of that partition and fails every
    later produce to it (seen here, see tests/kafka). A pending record must fail (the
    caller retries it with a fresh producer, which creates the topic first) rather than be
    retried blindly into the restarted broker. aiokafka has no public way to do this: it
    relies on the producer's `_sender.sender_task` and its `_message_accumulator` (queued
    `_batches`, in-flight `_pending_batches`, `fail_all`, each batch's `_drain_waiter`).
    """
    task = _private(_private(producer, "_sender"), "sender_task")
    if task is not None and not task.done():
        task.cancel()
    accumulator = _private(producer, "_message_accumulator")
    batches = [b for queue in _private(accumulator, "_batches").values() for b in queue]
    batches += list(_private(accumulator, "_pending_batches"))
    accumulator.fail_all(error)
    for batch in batches:  # nobody may await them (batch API): no "exception never retrieved"
        for fut in (batch.future, _private(batch, "_drain_waiter")):
            if fut.done() and not fut.cancelled():
                fut.exception()


# --- The engine's Faust app ---------------------------------------------------------------------


async def _nothing_to_flush() -> None:
    return None


def _never_fenced() -> bool:
    return False


@dataclass(frozen=True)
class EngineHooks:
    """What the engine's Faust transport needs from the engine, handed to FaustApp explicitly."""

    fetch_max_wait_ms: int
    """How long the broker may hold one fetch (Faust's own 1,500 ms cannot be set otherwise)."""
    commit_timeout_s: float
    """An offset commit not done by then is given up (its records are delivered again)."""
    input_topics: frozenset[str]
    """The engine's input topics: a partition of these with nothing committed is read from its beginning."""
    is_fenced: Callable[[], bool] = _never_fenced
    """True once the engine is fenced: from then on no commit and no write reach the broker."""
    before_flush: Callable[[], Awaitable[None]] = _nothing_to_flush
    """Runs before Faust flushes its producer (which it does before every offset commit)."""
    fetch_pacing: float | None = None
    """The pacing ratio of the engine's consumer (see kafka/pacing.py); None: the process-wide setting."""


def _hooks(app: Any) -> EngineHooks:
    if not isinstance(app, FaustApp):
        raise TypeError(f"the engine transport runs only in a FaustApp, not {type(app).__name__}")
    return app.hooks


class LowLatencyConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's consumer thread with the engine's patches: fetch wait, pacing, seek, bounded commits."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._running_commits: set[asyncio.Future[bool]] = set()

    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        """Faust's worker consumer, with the engine's fetch wait (see `set_fetch_max_wait`)."""
        consumer = super()._create_worker_consumer(transport)
        set_fetch_max_wait(consumer, _hooks(self.app).fetch_max_wait_ms)
        return consumer

    async def on_start(self) -> None:
        await super().on_start()
        # the embedded broker's fetch cost grows with what it keeps
        pace_fetches(self._ensure_consumer(), ratio=_hooks(self.app).fetch_pacing)

    async def seek_to_committed(self) -> Mapping[TP, int]:
        """Faust calls this after table recovery: see `seek_to_committed_or_beginning`."""
        result: Mapping[TP, int] = await self.call_thread(self._seek_to_committed_or_beginning)
        return result

    async def _seek_to_committed_or_beginning(self) -> Mapping[Any, int | None]:
        return await seek_to_committed_or_beginning(self._ensure_consumer(), _hooks(self.app).input_topics)

    async def _commit(self, offsets: Mapping[TP, int]) -> bool:
        """Commit in the consumer thread, bounded, and never for a fenced engine.

        aiokafka retries a commit for as long as the error is retriable; after the in-memory
        broker restarted that is UnknownTopicOrPartition, forever, and Faust's stop waits for
        it (the reset hung). A commit that does not finish in time is given up: the records
        are delivered again (at least once), never lost. Relies on Faust's `commit` running
        `self._commit` in the consumer thread.
        """
        hooks = _hooks(self.app)
        if hooks.is_fenced():
            return False
        task: asyncio.Future[bool] = asyncio.ensure_future(super()._commit(offsets))
        self._running_commits.add(task)
        task.add_done_callback(self._running_commits.discard)
        try:
            done, _ = await asyncio.wait({task}, timeout=float(hooks.commit_timeout_s))
        finally:
            if not task.done():
                task.cancel()
        if task in done and not task.cancelled():
            return bool(task.result())
        if not hooks.is_fenced():
            log.warning("offset commit did not finish within %.0f s: not committed, those records will be "
                        "delivered again", float(hooks.commit_timeout_s))
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
            if self._consumer is not None:
                client = _private(self._consumer, "_client")
                # the broker is down or restarting: closing its connections must not raise
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await client.close()

    def cancel_commits(self) -> None:
        """Give up the commits running in the consumer thread now (callable from any thread)."""
        tasks = list(self._running_commits)
        if tasks:
            with contextlib.suppress(RuntimeError):  # the thread's loop is closed: nothing runs
                self.thread_loop.call_soon_threadsafe(lambda: [t.cancel() for t in tasks])


class GuardedConsumer(faust_aiokafka.Consumer):
    """Faust's Kafka consumer on a LowLatencyConsumerThread, committing nothing once fenced."""

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return LowLatencyConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def commit(self, topics: Any = None, start_new_transaction: bool = True) -> bool:
        """Faust's commit (periodic, on rebalance, on stop), refused once the engine is fenced."""
        if _hooks(self.app).is_fenced():
            return False
        return bool(await super().commit(topics, start_new_transaction=start_new_transaction))


class FlushHookProducer(faust_aiokafka.Producer):
    """Faust flushes its producer before every offset commit: the engine's batched state records first."""

    async def flush(self) -> None:
        hooks = _hooks(self.app)
        if hooks.is_fenced():
            return  # nothing of a fenced engine may reach the broker (see Engine.fence)
        await hooks.before_flush()
        await super().flush()


class EngineTransport(faust_aiokafka.Transport):
    """Faust's aiokafka transport with the engine's consumer and producer."""

    Consumer = GuardedConsumer
    Producer = FlushHookProducer


class FaustApp(faust.App):
    """faust.App on the EngineTransport, driven by the engine's `hooks`; checks versions first."""

    def __init__(self, id: str, *, hooks: EngineHooks, **options: Any) -> None:
        check_versions()
        self.hooks = hooks
        super().__init__(id, **options)

    def _new_transport(self) -> Any:
        return EngineTransport(self.conf.broker_consumer, self)


def _consumer_thread(app: faust.App) -> LowLatencyConsumerThread | None:
    """The app's consumer thread if its consumer was made (`app.consumer` would make one)."""
    consumer = _private(app, "_consumer", _FAUST)
    thread = None if consumer is None else _private(consumer, "_thread", _FAUST)
    return thread if isinstance(thread, LowLatencyConsumerThread) else None


def cancel_commits(app: faust.App) -> None:
    """Give up the offset commits the app's consumer thread is running (a fenced engine)."""
    thread = _consumer_thread(app)
    if thread is not None:
        thread.cancel_commits()


def abort_app_producer(app: faust.App, error: BaseException) -> None:
    """`abort_producer` on the app's aiokafka producer, if it has one (a fenced engine)."""
    faust_producer = _private(app, "_producer", _FAUST)
    producer = None if faust_producer is None else _private(faust_producer, "_producer", _FAUST)
    if producer is not None:
        abort_producer(producer, error)


def app_producer(app: faust.App) -> aiokafka.AIOKafkaProducer:
    """The started aiokafka producer under the app's Faust producer (NotReady before it started).

    The engine writes its changelog batches on it directly: Faust's own `send_changelog` costs
    ~0.3 ms a record (see Engine._changelog).
    """
    producer: aiokafka.AIOKafkaProducer = _private(app.producer, "_ensure_producer", _FAUST)()
    return producer


def abandon_consumer_thread(app: faust.App) -> None:
    """Stop the event loop of the app's consumer thread: an app that did not stop in time is let go."""
    thread = _consumer_thread(app)
    loop = None if thread is None else thread.thread_loop
    if loop is not None:
        with contextlib.suppress(RuntimeError):  # the loop is closed already
            loop.call_soon_threadsafe(loop.stop)

