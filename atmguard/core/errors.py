"""The atmguard error tree.

    AtmGuardError
    ├── CompatError            an installed Faust/aiokafka is not the one kafka/compat.py was written for
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
class CompatError(AtmGuardError):
    """Faust or aiokafka differ from the release atmguard's patches of their internals were written for.

    Raised at start-up (atmguard.kafka.compat.check_versions) rather than letting a patch
    silently stop working after an upgrade.
    """

    package: str
    found: str
    expected: str
    missing: str | None = None
    """The private name that is gone (dotted), when the version matched but a name did not."""
    used_by: str | None = None

    def __str__(self) -> str:
        if self.missing is None:
            return (f"{self.package} {self.found} is installed, but atmguard/kafka/compat.py was written for "
                    f"{self.expected}: install {self.package}=={self.expected}, or re-check compat.py against it")
        needed = f", needed by {self.used_by}" if self.used_by else ""
        return (f"{self.missing} is missing in {self.package} {self.found} (atmguard/kafka/compat.py was written "
                f"for {self.expected}{needed})")


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
