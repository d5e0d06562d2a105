"""The atmguard error tree.

    AtmGuardError
    ├── ConfigError            a deployment config file is wrong (path, field)
    ├── EventError             an event (JSON/JSONL) does not fit its contract (source, line, field)
    └── RuleError              a rule file is wrong (path, line, column)
        └── RuleSetError       several RuleErrors, all errors of one or more files at once

Each error carries the data that locates it, so callers can print, count or serve it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class AtmGuardError(Exception):
    """Base of every error atmguard raises on purpose."""


@dataclass
class ConfigError(AtmGuardError):
    """A config file or setting is invalid."""

    message: str
    path: str | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = ":".join(p for p in (self.path, self.field) if p)
        return f"{where}: {self.message}" if where else self.message


@dataclass
class EventError(AtmGuardError):
    """An event does not fit the contract; `field` is the dotted JSON path of the bad value."""

    message: str
    source: str | None = None
    line: int | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = self.source or ""
        if self.line is not None:
            where += f":{self.line}"
        if self.field:
            where += f": field {self.field!r}"
        return f"{where}: {self.message}" if where else self.message


@dataclass
class RuleError(AtmGuardError):
    """One problem in a rule file, said in an analyst's words."""

    message: str
    path: str = "<rules>"
    line: int = 1
    column: int = 1

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}: {self.message}"


@dataclass
class RuleSetError(AtmGuardError):
    """All the errors found in a set of rule files."""

    errors: list[RuleError] = field(default_factory=list)

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)
