"""The notifier's database: its migrations, read sessions and serialized write transactions.

SQLite allows one writer at a time and its busy handler sleeps 1-100 ms between retries,
so concurrent writers in one process queue on a lock here instead (PostgreSQL needs none).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from alembic import command
from sqlalchemy.orm import Session, sessionmaker

from atmguard.store.db import alembic_config, make_engine, make_sessionmaker


def migrate_notifier(url: str) -> None:
    """Create or upgrade the notifier's tables (its own Alembic branch)."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(url), "notifier@head")


class NotifierDB:
    """Engine + sessions for `url`; `tx()` for writes, `read()` for reads."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.sessions: sessionmaker[Session] = make_sessionmaker(self.engine)
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
        """Close the engine's connections (the service is stopping)."""
        self.engine.dispose()
