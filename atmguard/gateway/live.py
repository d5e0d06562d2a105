"""Fan-out of case changes to every open console (server-sent events)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any


class LiveFeed:
    """Each subscriber gets its own bounded queue; a slow console drops messages, never blocks the gateway."""

    def __init__(self, maxsize: int = 1000) -> None:
        self._subscribers: set[asyncio.Queue[str]] = set()
        self._maxsize = maxsize

    def publish(self, kind: str, data: dict[str, Any]) -> None:
        """Send one event to every subscriber (call from the event loop)."""
        message = f"event: {kind}\ndata: {json.dumps(data, default=str, ensure_ascii=False)}\n\n"
        for queue in list(self._subscribers):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(message)

    async def stream(self, keepalive_s: float = 15.0, max_s: float = 300.0) -> AsyncIterator[str]:
        """SSE text for one subscriber until it goes away, or `max_s` passed: the browser then
        reconnects and reloads the list, so no stream holds a server's shutdown for long."""
        queue: asyncio.Queue[str] = asyncio.Queue(self._maxsize)
        self._subscribers.add(queue)
        loop = asyncio.get_running_loop()
        end = loop.time() + max_s
        try:
            yield "retry: 2000\n\n"
            while loop.time() < end:
                try:
                    yield await asyncio.wait_for(queue.get(), keepalive_s)
                except TimeoutError:
                    yield ": keepalive\n\n"
        finally:
            self._subscribers.discard(queue)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)
