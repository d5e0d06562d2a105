"""Fetch pacing: one consumer never keeps the broker busy for more than a share of the time.

Why: the embedded broker (Tansu 0.6.0, in-memory storage) answers every fetch that finds new
data by listing every record batch the partition has ever stored (`fetch` in its
dynostore.rs), and it does not hold a fetch back when data is waiting. A consumer of a busy
topic therefore fetches again as soon as it is answered, and each answer costs more than the
last. Measured here (`atmguard bench gateway`, and one aiokafka consumer of a topic written at
500 records/s): the broker went from 18 % of a core (writes only) to 95 % within 30 s, and two
consumers took 1.3 of the 2 cores: the bank API's answers then queued for CPU behind it.

The pacing: after a fetch that returned records, the next fetch from that consumer to that
broker waits `ratio` times as long as the broker took to answer it (at most `max_wait_s`). A fast broker (a
fresh one, or Kafka) answers in a millisecond or two, so the wait is a few milliseconds; a
slow one is asked less often and answers with more records each time, so the records wait a
little longer instead of the whole machine waiting for the broker. An empty fetch (the
consumer is caught up; the broker holds it until data comes) is not paced: the first record
after a quiet spell is delivered at once.

This module is the policy only; `atmguard.kafka.compat.pace_fetches` installs it on an
aiokafka consumer (the one place that knows the consumer internals it replaces).
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Awaitable, Callable
from typing import Any

from atmguard.core.settings import KafkaSettings

DEFAULT_MAX_WAIT_S = 0.1


def pacing_ratio() -> float:
    """The ratio from the settings (ATMGUARD_FETCH_PACING, default 4: one consumer keeps the broker busy at most a fifth of the time; 0 turns pacing off)."""
    return KafkaSettings().fetch_pacing


class PacedFetch:
    """One consumer's fetch and send, wrapped: the broker's answer is timed, the next fetch waits.

    `fetch(assignment, node_id, request)` is one fetch from one broker (True if it brought
    records) and runs in a task of its own; `send` is how it talks to the broker. Which
    consumer internals these are, and how they are swapped, is atmguard/kafka/compat.py's
    business (`pace_fetches`)."""

    def __init__(
        self,
        fetch: Callable[[Any, int, Any], Awaitable[Any]],
        send: Callable[..., Awaitable[Any]],
        *,
        ratio: float,
        max_wait_s: float = DEFAULT_MAX_WAIT_S,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.ratio = ratio
        self.max_wait_s = max_wait_s
        self._fetch = fetch
        self._send = send
        self._sleep = sleep
        self._next_at: dict[int, float] = {}
        # the send times of the fetch running in this task
        self._answered_in: contextvars.ContextVar[list[float] | None] = contextvars.ContextVar(
            "answered_in", default=None
        )

    async def send(self, *args: Any, **kwargs: Any) -> Any:
        """The client's send, timed when it carries a fetch."""
        times = self._answered_in.get()
        if times is None:  # not a fetch (metadata, offsets, group): as it was
            return await self._send(*args, **kwargs)
        started = time.monotonic()
        try:
            return await self._send(*args, **kwargs)
        finally:
            times.append(time.monotonic() - started)

    async def fetch(self, assignment: Any, node_id: int, request: Any) -> bool:
        """One fetch, after the wait the previous one from this broker earned."""
        wait = self._next_at.get(node_id, 0.0) - time.monotonic()
        if wait > 0:
            try:
                await self._sleep(wait)
            except asyncio.CancelledError:
                return False  # as aiokafka's own fetch does when the assignment changes or it closes
        times: list[float] = []
        self._answered_in.set(times)  # this task's fetch only (each fetch runs in a task of its own)
        got_records = bool(await self._fetch(assignment, node_id, request))
        self._next_at[node_id] = (
            time.monotonic() + min(sum(times) * self.ratio, self.max_wait_s) if got_records else 0.0
        )
        return got_records
