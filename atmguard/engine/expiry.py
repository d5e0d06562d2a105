"""When state records fall out of the window: one min-heap of (event time, table key) per partition.

Expiry goes by event time per partition, not wall time: a partition's clock is the newest event
time it has seen, so a backlog processed late, or a replay, expires exactly what a live run would.
A heap entry may be stale (its key was rewritten or already removed); the caller checks each one
it is handed against the state before removing anything.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Iterator


class ExpiryQueues:
    """Table keys by the event time they expire by, per partition, and each partition's clock."""

    def __init__(self) -> None:
        self._heaps: defaultdict[int, list[tuple[float, str]]] = defaultdict(list)
        self._clock: defaultdict[int, float] = defaultdict(float)

    def push(self, partition: int, ts: float, key: str) -> None:
        heapq.heappush(self._heaps[partition], (ts, key))

    def clear(self) -> None:
        """Forget every entry (the state is being re-read); the partitions' clocks stay."""
        self._heaps = defaultdict(list)

    def observe(self, partition: int, ts: float) -> None:
        """Move a partition's clock to `ts` if that is newer."""
        if ts > self._clock[partition]:
            self._clock[partition] = ts

    def clock(self, partition: int) -> float:
        """The newest event time seen on a partition (0 before any)."""
        return self._clock[partition]

    def due(self, partition: int, ttl_s: float) -> Iterator[tuple[float, str]]:
        """Pop the entries of a partition older than its clock minus `ttl_s`, oldest first."""
        horizon = self._clock[partition] - ttl_s
        heap = self._heaps[partition]
        while heap and heap[0][0] < horizon:
            yield heapq.heappop(heap)
