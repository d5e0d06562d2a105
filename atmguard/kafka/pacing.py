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
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

DEFAULT_RATIO = 4.0
"""Wait four times the fetch's time: one consumer keeps the broker busy at most a fifth of the time."""
DEFAULT_MAX_WAIT_S = 0.1


def pacing_ratio(default: float = DEFAULT_RATIO) -> float:
    """The ratio from ATMGUARD_FETCH_PACING (0 turns pacing off)."""
    raw = os.environ.get("ATMGUARD_FETCH_PACING", "")
    try:
        return max(0.0, float(raw)) if raw else default
    except ValueError:
        return default


def pace_fetches(
    consumer: Any,
    *,
    ratio: float | None = None,
    max_wait_s: float = DEFAULT_MAX_WAIT_S,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> bool:
    """Pace a *started* aiokafka consumer's fetches; False if it cannot be (pacing off, or an
    aiokafka whose fetcher does not look as expected: the consumer then runs unpaced).

    The time that counts is the broker's answer (the fetch request's round trip), not the
    decoding of the records after it: with a backlog a fetch brings thousands of records, and
    pacing by the whole fetch would idle the consumer four fifths of the time. `sleep` is how
    the wait is spent (a test passes its own to see the waits of this consumer only)."""
    share = pacing_ratio() if ratio is None else ratio
    fetcher: Any = getattr(consumer, "_fetcher", None)
    fetch = getattr(fetcher, "_proc_fetch_request", None)
    client: Any = getattr(fetcher, "_client", None)
    send = getattr(client, "send", None)
    if share <= 0 or fetch is None or send is None or getattr(fetch, "atmguard_paced", False):
        return False
    next_at: dict[int, float] = {}
    answered_in: contextvars.ContextVar[list[float] | None] = contextvars.ContextVar("answered_in", default=None)

    async def timed_send(*args: Any, **kwargs: Any) -> Any:
        times = answered_in.get()
        if times is None:  # not a fetch (metadata, offsets, group): as it was
            return await send(*args, **kwargs)
        started = time.monotonic()
        try:
            return await send(*args, **kwargs)
        finally:
            times.append(time.monotonic() - started)

    async def paced(assignment: Any, node_id: int, request: Any) -> bool:
        wait = next_at.get(node_id, 0.0) - time.monotonic()
        if wait > 0:
            try:
                await sleep(wait)
            except asyncio.CancelledError:
                return False  # as aiokafka's own fetch does when the assignment changes or it closes
        times: list[float] = []
        answered_in.set(times)  # this task's fetch only (each fetch runs in a task of its own)
        got_records = bool(await fetch(assignment, node_id, request))
        next_at[node_id] = time.monotonic() + min(sum(times) * share, max_wait_s) if got_records else 0.0
        return got_records

    paced.atmguard_paced = True  # type: ignore[attr-defined]
    fetcher._proc_fetch_request = paced
    client.send = timed_send
    return True
