"""Fetch pacing (atmguard/kafka/pacing.py, installed by compat.pace_fetches): a paced consumer still gets every record, and after
a fetch that brought records it waits `ratio` x that fetch's time before asking again."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from atmguard.kafka.broker import EmbeddedBroker
from atmguard.kafka.compat import pace_fetches
from tests.streamkit import run


def test_a_paced_consumer_reads_every_record_in_order(broker: EmbeddedBroker) -> None:
    async def go() -> tuple[bool, bool, list[int]]:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks=1)
        await producer.start()
        consumer = AIOKafkaConsumer("paced", bootstrap_servers=broker.bootstrap, group_id=None,
                                    auto_offset_reset="earliest", fetch_max_wait_ms=10, enable_auto_commit=False)
        try:
            await producer.send_and_wait("paced", b"0", partition=0)  # the topic exists before the consumer
            await consumer.start()
            installed, again = pace_fetches(consumer, ratio=4.0), pace_fetches(consumer, ratio=4.0)
            got: list[int] = []

            async def write() -> None:
                for burst in range(5):  # bursts with quiet spells between them
                    for i in range(40):
                        await producer.send("paced", str(1 + burst * 40 + i).encode(), partition=0)
                    await producer.flush()
                    await asyncio.sleep(0.05)

            writer = asyncio.create_task(write())
            while len(got) < 201:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    got.extend(int(r.value) for r in records)
            await writer
            return installed, again, got
        finally:
            await consumer.stop()
            await producer.stop()

    installed, again, got = run(go())
    assert installed and not again  # installed once, never wrapped twice
    assert got == list(range(201))


class _FakeClient:
    async def send(self, node_id: int, request: Any) -> Any:
        took, _ = request
        await asyncio.sleep(took)  # the broker's answer
        return None


class _FakeFetcher:
    """Stands in for aiokafka's Fetcher: the broker answers each fetch in `took` seconds, then the
    records take `decode` seconds to read (not the broker's time: not paced)."""

    def __init__(self, answers: list[tuple[float, bool]], decode: float = 0.0) -> None:
        self.answers = answers
        self.decode = decode
        self._client = _FakeClient()

    async def _proc_fetch_request(self, assignment: Any, node_id: int, request: Any) -> bool:
        took, got = self.answers.pop(0)
        await self._client.send(node_id, (took, got))
        await asyncio.sleep(self.decode)
        return got




@pytest.mark.parametrize(("ratio", "expected_wait"), [(4.0, 0.08), (1.0, 0.02)])
def test_the_next_fetch_waits_ratio_times_the_last_one_that_brought_records(ratio: float, expected_wait: float) -> None:
    waits: list[float] = []

    async def recording_sleep(delay: float) -> None:  # this consumer's waits only, not the process's
        waits.append(delay)

    class Consumer:
        _fetcher = _FakeFetcher([(0.02, True), (0.02, False), (0.0, True)], decode=0.05)

    consumer = Consumer()
    assert pace_fetches(consumer, ratio=ratio, sleep=recording_sleep)

    async def go() -> None:
        fetch = consumer._fetcher._proc_fetch_request
        await fetch(None, 1, None)  # answered in 20 ms (+50 ms reading): the next one waits ratio x 20 ms
        await fetch(None, 1, None)
        await fetch(None, 1, None)  # the previous fetch was empty (caught up): no wait

    run(go())
    assert len(waits) == 1
    assert waits[0] == pytest.approx(expected_wait, abs=0.01)


def test_pacing_off_leaves_the_consumer_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATMGUARD_FETCH_PACING", "0")

    class Consumer:
        _fetcher = _FakeFetcher([])

    consumer = Consumer()
    original = consumer._fetcher._proc_fetch_request
    assert not pace_fetches(consumer)
    assert consumer._fetcher._proc_fetch_request == original
