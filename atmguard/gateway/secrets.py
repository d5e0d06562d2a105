"""Secrets kept in the data directory: the bank-key master secret and the session secret.

Each is read from the environment first (ATMGUARD_BANK_KEY_SECRET, settings.session_secret),
else from a 0600 file under `<data_dir>/secrets/`, generated on first use.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from atmguard.core.settings import Settings


def _file_secret(path: Path) -> str:
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    value = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)
    return value


def bank_master_secret(settings: Settings) -> bytes:
    """The secret every bank key is derived from; losing it invalidates all bank keys."""
    if settings.bank_key_secret is not None:
        return settings.bank_key_secret.get_secret_value().encode()
    return _file_secret(settings.data_dir / "secrets" / "bank-keys.secret").encode()


def session_secret(settings: Settings) -> str:
    """The console's cookie-signing secret."""
    if settings.session_secret is not None:
        return settings.session_secret.get_secret_value()
    return _file_secret(settings.data_dir / "secrets" / "session.secret")
