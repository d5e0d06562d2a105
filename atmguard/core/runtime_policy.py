"""Process-wide settings of the long-running services that keep the event loop's pauses short.

Two things stop an asyncio service for milliseconds at a time without any request being slow
in itself; both were found with `atmguard bench gateway` and py-spy:

1. The GIL hand-over. A socket call releases the GIL; to get it back, the loop thread waits for
   whichever thread holds it (the receipt writer's SQL, aiokafka's consumer thread in Faust) to
   let go, which CPython asks for only every `sys.getswitchinterval()` (5 ms by default). At 500
   requests/s a quarter of the gateway's samples were in `socket.send` waiting for the GIL.
   The policy sets the interval to 0.5 ms (`ATMGUARD_GIL_SWITCH_S`, core/settings.py).

2. The cycle collector. Why: the gateway's hold advisor and the engine keep every event of the longest rule window alive
(pydantic models, the rule runtime's records), and CPython's cycle collector walks *all* tracked
objects in a full (generation 2) collection while the event loop stands still. Measured with
`atmguard bench gateway` at 500 signed events/s: full collections of 160 to 200 ms every ~0.6 s,
most of them over the ~140,000 objects that imports and start-up leave behind and that never die
(p99 118 ms, against 8 ms at the same rate in a 4 s step).

The policy: after start-up, collect once and `gc.freeze()` what is left (never scanned again);
then every `freeze_every_s` run a young collection (cheap: only objects since the last one) and
freeze the survivors too, so long-lived state leaves the scanned generations before it grows.
Frozen objects are still freed by reference counting when the rules drop them; only garbage in
a reference *cycle* that was alive at a freeze is never reclaimed. `atmguard bench gateway` runs
a full collection after every step and found none (0 objects after each of 15 steps, 32,000
requests through uvicorn, aiokafka, the advisor and the follower), so the periodic full
collection that would reclaim such cycles is off by default: `full_every_s` (0 = never) turns it
on; its pause (the whole heap, 0.1 to 2 s) is reported in `atmguard_gc_pause_seconds`.

Tunable by environment: ATMGUARD_GIL_SWITCH_S (0.0005), ATMGUARD_GC_FREEZE_S (1; 0 turns the policy off), ATMGUARD_GC_FULL_S (0: never).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sys
import time
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from atmguard.core.settings import RuntimeSettings

log = logging.getLogger(__name__)

_PAUSE = Histogram(
    "atmguard_gc_pause_seconds",
    "Pauses of CPython's cycle collector (the event loop stands still meanwhile), by generation.",
    ["generation"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
_FROZEN = Gauge("atmguard_gc_frozen_objects", "Objects moved out of the collector's generations by gc.freeze().")
_FREEZES = Counter("atmguard_gc_freezes", "Periodic freezes of long-lived objects.")


_started_at: dict[str, float] = {}
_task: asyncio.Task[None] | None = None


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started_at["t"] = time.perf_counter()
    elif "t" in _started_at:
        _PAUSE.labels(str(info.get("generation", "?"))).observe(time.perf_counter() - _started_at.pop("t"))


def shorten_gil_switch() -> None:
    """Set the GIL switch interval to ATMGUARD_GIL_SWITCH_S (0.5 ms) unless it is already shorter.

    Also called by the engine itself: Faust runs its Kafka consumer in a thread of its own, and
    profiled at the default 5 ms the loop waited ~1 ms per producer `send()`.
    """
    switch = RuntimeSettings().gil_switch_s
    if 0 < switch < sys.getswitchinterval():
        sys.setswitchinterval(switch)


def freeze_now(*, count: bool = False) -> int:
    """Young collection, then freeze the survivors.

    `count`: also return (and export) how many objects are frozen in all, which walks the whole
    frozen set (5 % of the gateway's CPU when done every second), so only now and then.
    """
    gc.collect(1)
    gc.freeze()
    _FREEZES.inc()
    if not count:
        return -1
    frozen = gc.get_freeze_count()
    _FROZEN.set(frozen)
    return frozen


def full_collection() -> int:
    """Unfreeze and collect everything (reclaims cycles frozen while alive); then freeze again."""
    gc.unfreeze()
    found = gc.collect()
    gc.freeze()
    _FROZEN.set(gc.get_freeze_count())
    return found


async def _run(freeze_every_s: float, full_every_s: float) -> None:
    last_full = last_count = time.monotonic()
    while True:
        await asyncio.sleep(freeze_every_s)
        if _task is not asyncio.current_task():
            return  # superseded: a later install (another loop of this process) owns the policy now
        if full_every_s > 0 and time.monotonic() - last_full >= full_every_s:
            last_full = time.monotonic()
            found = full_collection()
            log.info("full garbage collection: %d unreachable objects reclaimed", found)
        else:
            counting = time.monotonic() - last_count >= 60
            if counting:
                last_count = time.monotonic()
            freeze_now(count=counting)


def install(*, freeze_every_s: float | None = None, full_every_s: float | None = None) -> bool:
    """Apply the policy to this process (idempotent: `atmguard up` runs several services in one).

    Call from a running event loop, after the service has loaded what it keeps for its lifetime.
    Returns False when the collector part of the policy is turned off.
    """
    global _task
    shorten_gil_switch()
    configured = RuntimeSettings()
    every = configured.gc_freeze_s if freeze_every_s is None else freeze_every_s
    full = configured.gc_full_s if full_every_s is None else full_every_s
    if _on_gc not in gc.callbacks:
        gc.callbacks.append(_on_gc)
    if every <= 0:
        return False
    loop = asyncio.get_running_loop()
    if _task is not None and not _task.done() and _task.get_loop() is loop:
        freeze_now()  # a second service started in this process: its start-up objects too
        return True
    gc.collect()
    freeze_now(count=True)
    _task = loop.create_task(_run(every, full), name="atmguard-gc-policy")
    log.debug("gc policy: frozen %d objects, freezing survivors every %.0f s", gc.get_freeze_count(), every)
    return True


async def uninstall() -> None:
    """Stop the periodic freezes (the loop is closing); frozen objects stay frozen."""
    global _task
    task, _task = _task, None
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
