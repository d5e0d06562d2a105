"""Console users: argon2-hashed passwords, one role each."""

from __future__ import annotations

import re

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.orm import Session, sessionmaker

from atmguard.store.cases import ROLES, AuditEntry, User

_HASHER = PasswordHasher()
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")
_DUMMY: list[str] = []


def _dummy_hash() -> str:
    """Verifying against this keeps unknown names as slow as wrong passwords (made on first use)."""
    if not _DUMMY:
        _DUMMY.append(_HASHER.hash("not a password"))
    return _DUMMY[0]


class UserError(Exception):
    """A user cannot be made as asked."""


def add_user(sessions: sessionmaker[Session], name: str, role: str, password: str, *, actor: str = "cli") -> None:
    """Create (or reset the password and role of) a console user."""
    if not NAME_RE.match(name):
        raise UserError(f"user name {name!r}: use letters, digits, '.', '_', '@' or '-'")
    if role not in ROLES:
        raise UserError(f"role {role!r}: choose one of {', '.join(ROLES)}")
    if len(password) < 8:
        raise UserError("the password must have at least 8 characters")
    with sessions.begin() as session:
        user = session.get(User, name)
        action = "user.add" if user is None else "user.reset"
        if user is None:
            session.add(User(name=name, role=role, password_hash=_HASHER.hash(password)))
        else:
            user.role = role
            user.password_hash = _HASHER.hash(password)
        session.add(AuditEntry(actor=actor, action=action, target=name, details={"role": role}))


def authenticate(sessions: sessionmaker[Session], name: str, password: str) -> User | None:
    """The user if the password is right, else None."""
    with sessions() as session:
        user = session.get(User, name)
        try:
            _HASHER.verify(user.password_hash if user else _dummy_hash(), password)
        except (VerificationError, InvalidHashError):
            return None
        return user
