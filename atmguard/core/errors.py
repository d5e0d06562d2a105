"""The atmguard error tree, and the one way an error says where it is.

    AtmGuardError
    ├── CompatError            an installed Faust/aiokafka is not the one kafka/compat.py was written for
    ├── PositionedError        a message and the Position it is about (file, line, column, key path)
    │   ├── ConfigError        a config file or setting is wrong
    │   │   └── DeploymentConfigError   (in notifier.config) the deployment config
    │   ├── EventError         an event (JSON/JSONL) does not fit its contract
    │   └── RuleError          a rule file is wrong (always a line and a column, 1:1 when unknown)
    └── RuleSetError           several RuleErrors, all errors of one or more files at once

Every positioned error prints the same way, `path:line:col: subject: message`, leaving out
what is unknown; the subject is the key path as each kind words it (`people.x.phone` for
configs, `field 'ts'` for events, nothing for rules, whose messages already name it in an
analyst's words). So callers can print, count or serve the data, and users read one form.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import ClassVar


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


def key_path(loc: Iterable[object]) -> str:
    """A path into a document as people write it: `atms[2].phone` for ("atms", 2, "phone")."""
    out = ""
    for part in loc:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


@dataclass(frozen=True)
class Position:
    """Where in a file an error is: each part None when unknown (lines and columns count from 1)."""

    path: str | None = None
    line: int | None = None
    column: int | None = None
    key_path: str | None = None
    """The dotted/indexed path of the value in the document, e.g. `atms[2].phone`."""

    def __str__(self) -> str:
        """`path:line:col`, leaving out what is unknown (a column is only said after a line)."""
        where = self.path or ""
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return where


class PositionedError(AtmGuardError):
    """An error about one place in a file (or one setting): a message and its Position."""

    subject: ClassVar[str | None] = "{}"
    """How the key path reads between the position and the message; None: not shown."""

    def __init__(self, message: str, *, position: Position | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.position = position if position is not None else Position()

    @property
    def path(self) -> str | None:
        return self.position.path

    @property
    def line(self) -> int | None:
        return self.position.line

    @property
    def column(self) -> int | None:
        return self.position.column

    @property
    def field(self) -> str | None:
        """The key path (the name config and event errors have always given it)."""
        return self.position.key_path

    def __str__(self) -> str:
        key = self.position.key_path
        parts = [str(self.position), self.subject.format(key) if key and self.subject else ""]
        return ": ".join([*(p for p in parts if p), self.message])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, position={self.position!r})"


class ConfigError(PositionedError):
    """A config file or setting is invalid; `field` is the key path of the bad value."""

    def __init__(self, message: str, path: str | None = None, field: str | None = None, *,
                 position: Position | None = None) -> None:
        if position is None:
            position = Position(path, key_path=field)
        super().__init__(message, position=position)


class EventError(PositionedError):
    """An event does not fit the contract; `field` is the dotted JSON path of the bad value."""

    subject = "field {!r}"

    def __init__(self, message: str, source: str | None = None, line: int | None = None,
                 field: str | None = None, *, position: Position | None = None) -> None:
        if position is None:
            position = Position(source, line, key_path=field)
        super().__init__(message, position=position)

    @property
    def source(self) -> str | None:
        """The file (or other source) the event came from."""
        return self.position.path


class RuleError(PositionedError):
    """One problem in a rule file, said in an analyst's words.

    The rule checker's form is always `path:line:col: message`, so an unknown part reads
    as `<rules>` or 1 (the top of the file), as it always has.
    """

    subject = None

    def __init__(self, message: str, path: str = "<rules>", line: int = 1, column: int = 1, *,
                 position: Position | None = None) -> None:
        if position is None:
            position = Position(path, line, column)
        position = replace(position, path=position.path or "<rules>", line=position.line or 1,
                           column=position.column or 1)
        super().__init__(message, position=position)

    @property
    def path(self) -> str:
        return self.position.path or "<rules>"

    @property
    def line(self) -> int:
        return self.position.line or 1

    @property
    def column(self) -> int:
        return self.position.column or 1


@dataclass
class RuleSetError(AtmGuardError):
    """All the errors found in a set of rule files."""

    errors: list[RuleError] = field(default_factory=list)

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)
