"""The services' runtime policy: long-lived objects leave the collector's generations, the GIL is handed over quickly."""

from __future__ import annotations

import asyncio
import gc
import sys
from collections.abc import Iterator

import pytest

from atmguard.core import runtime_policy
from atmguard.core.settings import RuntimeSettings


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture
def policy(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # a policy another test's service left running (in its own loop) retires at its next wake-up
    # instead of freezing this test's objects under it (gc.freeze() is process-wide)
    monkeypatch.setattr(runtime_policy, "_task", None)
    switch = sys.getswitchinterval()
    yield
    gc.unfreeze()
    sys.setswitchinterval(switch)


def _scanned() -> int:
    """Objects a full collection would walk (frozen ones are not among them)."""
    return len(gc.get_objects())


def test_long_lived_state_is_not_scanned_by_full_collections(policy: None) -> None:
    async def main() -> tuple[int, int, int, int]:
        state = [Node() for _ in range(50_000)]  # what a service loads at start
        before = _scanned()
        runtime_policy.install(freeze_every_s=0.05, full_every_s=0)
        after_start = _scanned()
        state.extend(Node() for _ in range(50_000))  # what it accumulates while it runs
        grown = _scanned()
        await asyncio.sleep(0.3)  # a few periodic freezes
        settled = _scanned()
        await runtime_policy.uninstall()
        assert len(state) == 100_000
        return before, after_start, grown, settled

    before, after_start, grown, settled = asyncio.run(main())
    assert before > 50_000
    assert after_start < before - 50_000
    assert grown >= after_start + 50_000
    assert settled < grown - 45_000, "objects that survived were not moved out of the scanned generations"


def test_frozen_objects_are_still_freed_by_reference_counting(policy: None) -> None:
    import weakref

    async def main() -> bool:
        runtime_policy.install(freeze_every_s=0.05, full_every_s=0)
        node = Node()
        ref = weakref.ref(node)
        await asyncio.sleep(0.15)  # frozen now
        del node
        await runtime_policy.uninstall()
        return ref() is None

    assert asyncio.run(main())


def test_the_full_collection_reclaims_cycles_that_died_after_a_freeze(policy: None) -> None:
    import weakref

    a, b = Node(), Node()
    a.other, b.other = b, a  # a reference cycle: only the collector can free it
    ref = weakref.ref(a)
    gc.collect()
    gc.freeze()
    del a, b
    gc.collect()
    assert ref() is not None, "a frozen cycle is not collected by ordinary collections"
    assert runtime_policy.full_collection() >= 2
    assert ref() is None


def test_install_shortens_the_gil_switch_interval_and_can_be_turned_off(
    policy: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    sys.setswitchinterval(0.005)
    monkeypatch.setenv("ATMGUARD_GC_FREEZE_S", "0")

    async def main() -> bool:
        return runtime_policy.install()

    assert asyncio.run(main()) is False  # the collector part is off
    assert sys.getswitchinterval() == pytest.approx(RuntimeSettings().gil_switch_s, rel=0.01)
