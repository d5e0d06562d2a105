"""`atmguard publish`: recorded events into the running stack, in event-time order.

For drills, demos and load tests: optionally paced as recorded (`realtime`) and re-stamped so
the first event happens now (`now`), keeping the gaps between events.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from atmguard.core.contracts import BankEvent, BehaviorFact, read_events

if TYPE_CHECKING:
    from atmguard.core.settings import Settings
    from atmguard.kafka.publisher import EventPublisher

Event = BehaviorFact | BankEvent


def restamp(events: Sequence[Event], start: datetime | None = None, suffix: str = "") -> list[Event]:
    """Shift every time so the first event is at `start` (default now); gaps are kept.

    `suffix` is appended to every event id, so the same recording can be replayed as new events.
    """
    if not events:
        return []
    start = start or datetime.now(UTC)
    delta: timedelta = start - events[0].ts
    out: list[Event] = []
    for ev in events:
        update: dict[str, object] = {"ts": ev.ts + delta}
        if isinstance(ev, BehaviorFact):
            update["started_at"] = ev.started_at + delta
        if suffix:
            update["id"] = ev.id + suffix
        out.append(ev.model_copy(update=update))
    return out


def load(paths: Iterable[str | Path], *, now: bool = False, suffix: str = "") -> list[Event]:
    """Events of JSONL files merged in event-time order, optionally re-stamped to now."""
    events = read_events(paths)
    return restamp(events, suffix=suffix) if (now or suffix) and events else events


async def publish_events(
    publisher: EventPublisher,
    events: Sequence[Event],
    *,
    realtime: bool = False,
    speed: float = 1.0,
    on_sent: Callable[[Event], None] | None = None,
    batch: int = 500,
) -> int:
    """Publish in order and wait for every ack; with `realtime`, sleep the recorded gaps (/ speed)."""
    if not events:
        return 0
    if not realtime:
        sent = 0
        for i in range(0, len(events), batch):
            chunk = events[i : i + batch]
            sent += await publisher.publish_many(chunk)
            if on_sent is not None:
                for ev in chunk:
                    on_sent(ev)
        return sent
    first_ts = events[0].ts
    t0 = time.monotonic()
    for ev in events:
        due = (ev.ts - first_ts).total_seconds() / max(speed, 1e-9)
        wait = due - (time.monotonic() - t0)
        if wait > 0:
            await asyncio.sleep(wait)
        await publisher.publish(ev)
        if on_sent is not None:
            on_sent(ev)
    return len(events)


def resolve_broker(settings: Settings, broker: str | None = None) -> str:
    """The broker to talk to: --broker, ATMGUARD_BROKER, or the one a running `atmguard up` wrote down."""
    if broker:
        return broker
    if settings.broker:
        return settings.broker
    marker = settings.data_dir / "run" / "broker.url"
    if marker.exists():
        return marker.read_text(encoding="utf-8").strip()
    return "kafka://127.0.0.1:9092"
