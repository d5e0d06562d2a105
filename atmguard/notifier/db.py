"""The notifier's database handle: read sessions and serialized write transactions.

SQLite allows one writer at a time and its busy handler sleeps 1-100 ms between retries,
so concurrent writers in one process queue on a lock here instead (PostgreSQL needs none).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

from sqlalchemy.orm import Session

from atmguard.store.db import make_engine, make_sessionmaker


class NotifierDB:
    """Engine + sessions for `url`; `tx()` for writes, `read()` for reads."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.sessions = make_sessionmaker(self.engine)
        self._lock: Any = threading.Lock() if url.startswith("sqlite") else nullcontext()

    @contextmanager
    def tx(self) -> Iterator[Session]:
        """A write transaction, committed on success."""
        with self._lock, self.sessions.begin() as s:
            yield s

    def read(self) -> Session:
        """A session for reads (use as a context manager)."""
        return self.sessions()

    def dispose(self) -> None:
        self.engine.dispose()
