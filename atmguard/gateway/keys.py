"""Bank keys: made, rotated, revoked, and looked up to verify signatures.

A key is never stored. Each key row holds a random salt; the key is
HMAC-SHA256(master secret, "atmguard-bank-key|BANK_ID|SALT") as hex. The database alone gives
no usable key (the master secret lives in the data dir with mode 0600, or in the environment),
yet the gateway can re-derive every live key to check an HMAC, which a one-way hash could not.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from atmguard.store.cases import AuditEntry, Bank, BankKey, utcnow

BANK_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class BankKeyError(Exception):
    """A key operation that cannot be done (unknown bank, bad id, nothing to revoke)."""


def derive_key(master: bytes, bank_id: str, salt: str) -> str:
    """The bank's key for one salt."""
    return hmac.new(master, f"atmguard-bank-key|{bank_id}|{salt}".encode(), hashlib.sha256).hexdigest()


def fingerprint(key: str) -> str:
    """A short public id of a key, safe to show and log."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class KeyInfo:
    """A key as listed (never the key itself)."""

    bank_id: str
    fingerprint: str
    status: str
    created_at: datetime


class BankKeys:
    """Key management and lookup over the case store; lookups are cached for a few seconds."""

    def __init__(self, sessions: sessionmaker[Session], master: bytes, cache_s: float = 5.0) -> None:
        self._sessions = sessions
        self._master = master
        self._cache_s = cache_s
        self._cache: dict[str, tuple[float, list[str]]] = {}
        self._lock = threading.Lock()

    def _new_key(self, session: Session, bank_id: str, status: str) -> str:
        salt = secrets.token_hex(16)
        key = derive_key(self._master, bank_id, salt)
        session.add(BankKey(bank_id=bank_id, salt=salt, fingerprint=fingerprint(key), status=status))
        return key

    def add(self, bank_id: str, *, webhook_url: str | None = None, actor: str = "cli") -> str:
        """Register a bank and return its first key (shown once)."""
        if not BANK_ID_RE.match(bank_id):
            raise BankKeyError(f"bank id {bank_id!r}: use letters, digits, '.', '_' or '-' (at most 100)")
        with self._sessions.begin() as session:
            if session.get(Bank, bank_id) is not None:
                raise BankKeyError(f"bank {bank_id!r} already exists; use `atmguard banks rotate {bank_id}`")
            session.add(Bank(bank_id=bank_id, webhook_url=webhook_url))
            session.flush()
            key = self._new_key(session, bank_id, "current")
            session.add(AuditEntry(actor=actor, action="bank.add", target=bank_id, details={"fingerprint": fingerprint(key)}))
        self.invalidate(bank_id)
        return key

    def rotate(self, bank_id: str, *, actor: str = "cli") -> str:
        """A new current key; the previous current key stays valid (status old) until revoked."""
        with self._sessions.begin() as session:
            if session.get(Bank, bank_id) is None:
                raise BankKeyError(f"unknown bank {bank_id!r}; add it with `atmguard banks add {bank_id}`")
            for row in session.scalars(select(BankKey).where(BankKey.bank_id == bank_id, BankKey.status == "current")):
                row.status = "old"
            key = self._new_key(session, bank_id, "current")
            session.add(AuditEntry(actor=actor, action="bank.rotate", target=bank_id, details={"fingerprint": fingerprint(key)}))
        self.invalidate(bank_id)
        return key

    def revoke_old(self, bank_id: str, *, actor: str = "cli") -> int:
        """Revoke every key of the bank but the current one; returns how many."""
        with self._sessions.begin() as session:
            if session.get(Bank, bank_id) is None:
                raise BankKeyError(f"unknown bank {bank_id!r}")
            rows = list(session.scalars(select(BankKey).where(BankKey.bank_id == bank_id, BankKey.status == "old")))
            for row in rows:
                row.status = "revoked"
                row.revoked_at = utcnow()
            session.add(
                AuditEntry(actor=actor, action="bank.revoke_old", target=bank_id, details={"revoked": [r.fingerprint for r in rows]})
            )
        self.invalidate(bank_id)
        return len(rows)

    def set_webhook(self, bank_id: str, url: str | None, *, actor: str = "cli") -> None:
        """Where this bank's intervention notices go."""
        with self._sessions.begin() as session:
            bank = session.get(Bank, bank_id)
            if bank is None:
                raise BankKeyError(f"unknown bank {bank_id!r}")
            bank.webhook_url = url
            session.add(AuditEntry(actor=actor, action="bank.webhook", target=bank_id, details={"url": url}))

    def all_keys(self) -> list[KeyInfo]:
        """Every key of every bank, oldest first."""
        with self._sessions() as session:
            rows = session.scalars(select(BankKey).order_by(BankKey.bank_id, BankKey.id))
            return [KeyInfo(r.bank_id, r.fingerprint, r.status, r.created_at) for r in rows]

    def webhooks(self) -> dict[str, str]:
        """bank_id -> webhook URL, for banks that set one."""
        with self._sessions() as session:
            return {b.bank_id: b.webhook_url for b in session.scalars(select(Bank)) if b.webhook_url}

    def valid_keys(self, bank_id: str) -> list[str]:
        """The keys that may sign for `bank_id` now (current and not-yet-revoked old); [] if unknown."""
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(bank_id)
            if hit is not None and now - hit[0] < self._cache_s:
                return hit[1]
        with self._sessions() as session:
            rows = session.scalars(
                select(BankKey).where(BankKey.bank_id == bank_id, BankKey.status.in_(("current", "old"))).order_by(BankKey.id.desc())
            )
            keys = [derive_key(self._master, bank_id, r.salt) for r in rows]
        with self._lock:
            self._cache[bank_id] = (now, keys)
        return keys

    def current_key(self, bank_id: str) -> str | None:
        """The newest key, used to sign webhooks to the bank."""
        keys = self.valid_keys(bank_id)
        return keys[0] if keys else None

    def invalidate(self, bank_id: str | None = None) -> None:
        """Forget cached keys (after a change in this process)."""
        with self._lock:
            if bank_id is None:
                self._cache.clear()
            else:
                self._cache.pop(bank_id, None)
