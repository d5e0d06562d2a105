"""Contract tests of atmguard/kafka/compat.py: one per patch of a Faust/aiokafka internal.

Each fails if its patch stops taking effect (after an upgrade, a rename, a refactor of the
library), and the start-up check fails loudly when the versions or a private name differ.
Some tests reach into private names themselves: to see that a patch really took effect.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import aiokafka
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.client import AIOKafkaClient
from aiokafka.consumer.fetcher import Fetcher
from aiokafka.producer.message_accumulator import MessageBatch
from aiokafka.protocol.fetch import FetchRequest
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from atmguard.core.errors import CompatError
from atmguard.core.settings import Settings
from atmguard.engine.faust_app import FaustApp
from atmguard.kafka import compat
from atmguard.kafka.broker import EmbeddedBroker
from atmguard.kafka.publisher import EventPublisher
from tests.streamkit import run


def make_app(
    *,
    broker: str = "kafka://127.0.0.1:1",
    fetch_max_wait_ms: int = 10,
    commit_timeout_s: float = 10.0,
    input_topics: frozenset[str] = frozenset({"compat.input"}),
    is_fenced: Callable[[], bool] = lambda: False,
    before_flush: Callable[[], Awaitable[None]] | None = None,
    **conf: Any,
) -> FaustApp:
    """An engine Faust app (not started) on the engine transport, with the given hooks."""
    hooks = compat.EngineHooks(fetch_max_wait_ms=fetch_max_wait_ms, commit_timeout_s=commit_timeout_s,
                               input_topics=input_topics, is_fenced=is_fenced)
    if before_flush is not None:
        hooks = dataclasses.replace(hooks, before_flush=before_flush)
    return FaustApp("compat-test", hooks=hooks, broker=broker, web_enabled=False, store="memory://",
                    autodiscover=False, **conf)


def thread_of(app: FaustApp) -> compat.LowLatencyConsumerThread:
    thread = app.consumer._thread  # type: ignore[attr-defined]
    assert isinstance(thread, compat.LowLatencyConsumerThread)  # Faust builds the thread the engine consumer asks for
    return thread


async def _inline(fun: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
    """Stands in for `call_thread` (the consumer thread is not running in these tests)."""
    return await fun(*args, **kwargs)


# --- the start-up check ---------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def fresh_check() -> Iterator[None]:
    """The check runs once per process: each test here checks afresh (and leaves no result behind)."""
    compat.check_versions.cache_clear()
    yield
    compat.check_versions.cache_clear()


def test_the_installed_releases_are_the_ones_the_patches_were_written_for() -> None:
    compat.check_versions()
    assert compat.WRITTEN_FOR == {"faust-streaming": "0.15.3", "aiokafka": "0.14.0"}


def test_the_check_reads_the_libraries_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    compat.check_versions()
    monkeypatch.setattr(compat.importlib.metadata, "version", lambda name: "0.0.0")
    compat.check_versions()  # remembered: a second Faust app or publisher does not read the sources again
    compat.check_versions.cache_clear()
    with pytest.raises(CompatError):
        compat.check_versions()


def test_another_aiokafka_release_stops_start_up_with_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real = compat.importlib.metadata.version
    monkeypatch.setattr(compat.importlib.metadata, "version",
                        lambda name: "0.15.0" if name == "aiokafka" else real(name))
    with pytest.raises(CompatError) as raised:
        compat.check_versions()
    assert (raised.value.package, raised.value.found, raised.value.expected) == ("aiokafka", "0.15.0", "0.14.0")
    assert "aiokafka 0.15.0" in str(raised.value) and "0.14.0" in str(raised.value)
    # and every part that relies on the patches refuses to start
    with pytest.raises(CompatError):
        make_app()
    with pytest.raises(CompatError):
        EventPublisher("127.0.0.1:1", Settings())


def test_another_faust_release_stops_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    real = compat.importlib.metadata.version
    monkeypatch.setattr(compat.importlib.metadata, "version",
                        lambda name: "0.16.0" if name == "faust-streaming" else real(name))
    with pytest.raises(CompatError) as raised:
        compat.check_versions()
    assert (raised.value.package, raised.value.found, raised.value.expected) == ("faust-streaming", "0.16.0", "0.15.3")


def test_a_private_method_that_is_gone_stops_start_up_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(Fetcher, "_proc_fetch_request")
    with pytest.raises(CompatError) as raised:
        compat.check_versions()
    assert raised.value.missing == "aiokafka.consumer.fetcher.Fetcher._proc_fetch_request"
    assert raised.value.used_by == "pace_fetches"
    assert "Fetcher._proc_fetch_request is missing in aiokafka 0.14.0" in str(raised.value)


def test_a_private_instance_attribute_no_longer_set_stops_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    real = compat.inspect.getsource

    def source_without_drain_waiter(obj: Any) -> str:
        text = real(obj)
        return text.replace("self._drain_waiter =", "self._drained =") if obj is MessageBatch else text

    monkeypatch.setattr(compat.inspect, "getsource", source_without_drain_waiter)
    with pytest.raises(CompatError) as raised:
        compat.check_versions()
    assert raised.value.missing == "aiokafka.producer.message_accumulator.MessageBatch._drain_waiter"


def test_a_patch_fails_loudly_when_a_private_name_is_missing_at_run_time() -> None:
    class NotAConsumer:
        pass

    with pytest.raises(CompatError) as raised:
        compat.pace_fetches(NotAConsumer(), ratio=4.0)
    assert raised.value.missing is not None and raised.value.missing.endswith("NotAConsumer._fetcher")


# --- the engine's consumer ------------------------------------------------------------------------


@pytest.mark.slow
def test_a_consumer_made_by_the_engine_app_asks_the_broker_to_wait_at_most_the_hooks_fetch_wait(
    broker: EmbeddedBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    waits: list[int] = []
    real_send = AIOKafkaClient.send

    async def recording_send(self: AIOKafkaClient, node_id: int, request: Any, **kwargs: Any) -> Any:
        if isinstance(request, FetchRequest):
            waits.append(request._max_wait_ms)  # what goes on the wire
        return await real_send(self, node_id, request, **kwargs)

    monkeypatch.setattr(AIOKafkaClient, "send", recording_send)

    async def go() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        await producer.start()
        await producer.send_and_wait("compat.wait", b"0", partition=0)
        await producer.stop()
        app = make_app(broker=f"kafka://{broker.bootstrap}", fetch_max_wait_ms=37)
        consumer = thread_of(app)._create_worker_consumer(app.transport)
        await consumer.start()
        try:
            consumer.assign([TopicPartition("compat.wait", 0)])
            for _ in range(50):
                await consumer.getmany(timeout_ms=200)
                if len(waits) >= 2:
                    break
        finally:
            await consumer.stop()

    run(go())
    assert len(waits) >= 2
    assert set(waits) == {37}  # not Faust's hard-coded 1,500 ms


@pytest.mark.slow
def test_a_paced_consumer_fetches_through_the_pacing(broker: EmbeddedBroker) -> None:
    waits: list[float] = []

    async def recording_sleep(delay: float) -> None:  # this consumer's waits only, not the process's
        waits.append(delay)

    async def go() -> tuple[bool, list[bytes]]:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        await producer.start()
        for i in range(20):
            await producer.send_and_wait("compat.paced", str(i).encode(), partition=0)
        await producer.stop()
        consumer = AIOKafkaConsumer("compat.paced", bootstrap_servers=broker.bootstrap, group_id=None,
                                    auto_offset_reset="earliest", fetch_max_wait_ms=10, enable_auto_commit=False)
        await consumer.start()
        try:
            # a wait of a million times the broker's answer (at most a minute): certainly still ahead
            # when the next fetch starts, so every fetch after one with records passes the pacing's sleep
            installed = compat.pace_fetches(consumer, ratio=1e6, max_wait_s=60.0, sleep=recording_sleep)
            got: list[bytes] = []
            for _ in range(50):
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    got.extend(r.value for r in records if r.value is not None)
                if len(got) >= 20 and waits:
                    break
            return installed, got
        finally:
            await consumer.stop()

    installed, got = run(go())
    assert installed
    assert got == [str(i).encode() for i in range(20)]
    assert waits and all(w > 0 for w in waits)  # aiokafka's fetch loop went through the paced fetch


@pytest.mark.slow
def test_an_input_partition_with_nothing_committed_is_read_again_from_its_beginning(broker: EmbeddedBroker) -> None:
    """After table recovery Faust seeks to the committed offsets (through the engine's consumer thread);
    where nothing was committed yet, records already taken from the consumer (and dropped by Faust
    meanwhile) must come again."""

    async def go() -> tuple[int, int]:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        await producer.start()
        for topic in ("seek.input", "seek.other"):
            for i in range(2):
                await producer.send_and_wait(topic, str(i).encode(), partition=0)
        await producer.stop()
        consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id="seek-test", enable_auto_commit=False,
                                    auto_offset_reset="earliest", fetch_max_wait_ms=20)
        await consumer.start()
        inp, other = TopicPartition("seek.input", 0), TopicPartition("seek.other", 0)
        consumer.assign([inp, other])
        try:
            got = 0
            while got < 4:  # both records of both partitions taken, nothing committed
                got += sum(len(r) for r in (await consumer.getmany(timeout_ms=500)).values())
            app = make_app(input_topics=frozenset({"seek.input"}))
            thread = thread_of(app)
            thread._consumer = consumer
            thread.call_thread = _inline  # type: ignore[method-assign]
            await app.consumer.seek_to_committed()  # what Faust calls: it must reach the engine's seek
            return await consumer.position(inp), await consumer.position(other)
        finally:
            await consumer.stop()

    input_position, other_position = run(go())
    assert input_position == 0  # read again: the engine's inputs
    assert other_position == 2  # anything else (changelogs) is left where it is


@pytest.fixture
def hanging_commit(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Faust's own commit never finishes (aiokafka retrying a commit for a topic that is gone)."""
    seen: list[str] = []

    async def hang(self: Any, offsets: Any) -> bool:
        seen.append("started")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            seen.append("given up")
            raise
        return True

    monkeypatch.setattr(faust_aiokafka.AIOKafkaConsumerThread, "_commit", hang)
    yield seen


def test_a_commit_that_does_not_finish_is_given_up(hanging_commit: list[str]) -> None:
    async def go() -> bool:
        app = make_app(commit_timeout_s=0.1)
        thread = thread_of(app)
        thread.call_thread = _inline  # type: ignore[method-assign]
        return bool(await thread.commit({TP("compat.input", 0): 5}))  # Faust's entry: it runs `_commit`

    assert run(go()) is False
    assert hanging_commit == ["started", "given up"]


def test_a_fenced_engine_commits_nothing(hanging_commit: list[str]) -> None:
    async def go() -> tuple[bool, bool]:
        app = make_app(is_fenced=lambda: True)
        thread = thread_of(app)
        thread.call_thread = _inline  # type: ignore[method-assign]
        return bool(await thread.commit({TP("compat.input", 0): 5})), bool(await app.consumer.commit())

    assert run(go()) == (False, False)
    assert hanging_commit == []  # never asked the broker


def test_fencing_gives_up_the_commits_already_running(hanging_commit: list[str]) -> None:
    async def go() -> bool:
        app = make_app(commit_timeout_s=60.0)
        thread = thread_of(app)
        thread.call_thread = _inline  # type: ignore[method-assign]
        thread.thread_loop = asyncio.get_running_loop()  # the consumer thread's loop, here this one
        commit = asyncio.ensure_future(thread.commit({TP("compat.input", 0): 5}))
        while not hanging_commit:
            await asyncio.sleep(0)
        compat.cancel_commits(app)
        return bool(await commit)

    assert run(go(), timeout=30) is False
    assert hanging_commit == ["started", "given up"]


def test_the_consumer_thread_stops_although_aiokafka_lets_out_a_cancelled_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    closed: list[str] = []

    async def stop_cancelled(self: Any) -> None:
        raise asyncio.CancelledError  # aiokafka 0.14's Fetcher.close while a fetch was backing off

    class Client:
        async def close(self) -> None:
            closed.append("client")

    class Consumer:
        _client = Client()

    monkeypatch.setattr(faust_aiokafka.AIOKafkaConsumerThread, "on_thread_stop", stop_cancelled)

    async def go() -> None:
        thread = thread_of(make_app())
        thread._consumer = Consumer()  # type: ignore[assignment]
        await thread.on_thread_stop()  # returns: Faust learns the thread ended

    run(go())
    assert closed == ["client"]


def test_an_abandoned_apps_consumer_thread_loop_is_stopped() -> None:
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()
    try:
        app = make_app()
        thread_of(app).thread_loop = loop
        compat.abandon_consumer_thread(app)
        runner.join(timeout=10)
        assert not runner.is_alive()
    finally:
        if runner.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            runner.join(timeout=10)
        loop.close()


# --- the engine's producer ------------------------------------------------------------------------


def test_the_engine_flushes_its_state_records_before_fausts_producer_flushes(monkeypatch: pytest.MonkeyPatch) -> None:
    order: list[str] = []

    async def faust_flush(self: Any) -> None:
        order.append("faust")

    async def engine_flush() -> None:
        order.append("engine")

    monkeypatch.setattr(faust_aiokafka.Producer, "flush", faust_flush)
    fenced = False

    async def go() -> None:
        app = make_app(before_flush=engine_flush, is_fenced=lambda: fenced)
        assert isinstance(app.producer, compat.FlushHookProducer)
        await app.producer.flush()

    run(go())
    assert order == ["engine", "faust"]
    fenced = True
    run(go())
    assert order == ["engine", "faust"]  # a fenced engine's flush writes nothing


@pytest.mark.slow
def test_abort_producer_fails_a_pending_record_and_sends_nothing_more(broker: EmbeddedBroker) -> None:
    async def go() -> tuple[BaseException | None, bool, int]:
        first = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        await first.start()
        await first.send_and_wait("compat.abort", b"first", partition=0)
        await first.stop()
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=60_000)
        await producer.start()
        pending = await producer.send("compat.abort", b"pending", partition=0)  # lingers in the accumulator
        compat.abort_producer(producer, RuntimeError("broker restarting"))
        await asyncio.wait({pending}, timeout=10)
        sender_stopped = producer._sender.sender_task.done()
        await compat_quiet_stop(producer)
        consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None)
        await consumer.start()
        try:
            end = (await consumer.end_offsets([TopicPartition("compat.abort", 0)]))[TopicPartition("compat.abort", 0)]
        finally:
            await consumer.stop()
        return (pending.exception() if pending.done() else None), sender_stopped, end

    error, sender_stopped, end = run(go())
    assert isinstance(error, RuntimeError) and str(error) == "broker restarting"
    assert sender_stopped
    assert end == 1  # only the record acknowledged before the abort


@pytest.mark.slow
def test_the_engine_writes_on_and_aborts_the_aiokafka_producer_under_fausts(broker: EmbeddedBroker) -> None:
    async def go() -> tuple[bool, BaseException | None]:
        app = make_app(broker=f"kafka://{broker.bootstrap}", producer_linger_ms=60_000)
        await app.producer.start()
        try:
            producer = compat.app_producer(app)
            pending = await producer.send("compat.changelog", b"late", partition=0)
            compat.abort_app_producer(app, RuntimeError("fenced"))
            await asyncio.wait({pending}, timeout=10)
            return isinstance(producer, aiokafka.AIOKafkaProducer), pending.exception() if pending.done() else None
        finally:
            await compat_quiet_stop(compat.app_producer(app))

    is_aiokafka, error = run(go())
    assert is_aiokafka
    assert isinstance(error, RuntimeError) and str(error) == "fenced"


async def compat_quiet_stop(producer: AIOKafkaProducer) -> None:
    """Stop an aborted producer (its stop may let out the sender's CancelledError)."""
    try:
        await asyncio.wait_for(producer.stop(), 5)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
