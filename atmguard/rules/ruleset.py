"""`load_rules(paths) -> RuleSet`: every rule of some files or folders, checked, with a digest."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from atmguard.core.errors import RuleError, RuleSetError
from atmguard.rules.loader import LoadedRule, RuleSource, is_rule_file, is_test_file, load_rule_file
from atmguard.rules.schema import Rule


@dataclass(frozen=True)
class RuleSet:
    """Valid rules, in load order (files sorted by path), and where each was written."""

    rules: list[Rule]
    sources: dict[str, RuleSource] = field(default_factory=dict)
    files: tuple[str, ...] = ()

    @property
    def digest(self) -> str:
        """Changes whenever any rule changes (disabled ones included); same rules -> same digest."""
        payload = json.dumps(
            sorted((r.model_dump(mode="json", by_alias=True) for r in self.rules), key=lambda d: d["rule"]),
            sort_keys=True,
            ensure_ascii=False,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def get(self, name: str) -> Rule | None:
        """The rule named `name`, if any."""
        return next((r for r in self.rules if r.rule == name), None)

    @property
    def enabled(self) -> list[Rule]:
        """The rules that run (not `enabled: false`)."""
        return [r for r in self.rules if r.enabled]


def rule_files(paths: Iterable[str | Path]) -> list[Path]:
    """Rule files named directly or found in folders (recursively, skipping `*.test.yaml` and hidden)."""
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            out.extend(
                p
                for p in sorted(path.rglob("*"))
                if p.is_file() and is_rule_file(p) and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
        else:
            out.append(path)
    return list(dict.fromkeys(out))


def load_rules(paths: Iterable[str | Path]) -> RuleSet:
    """Load and check every rule; raises RuleSetError with all errors (file:line:col) of all files."""
    errors: list[RuleError] = []
    loaded: list[LoadedRule] = []
    files = rule_files(paths)
    for path in files:
        if not path.exists():
            errors.append(RuleError("no such file or folder", str(path), 1, 1))
            continue
        if is_test_file(path):
            continue  # rule tests are not rules (a shell glob like rules/*.yaml names them too)
        rules, file_errors = load_rule_file(path)
        loaded.extend(rules)
        errors.extend(file_errors)
    first: dict[str, RuleSource] = {}
    for item in loaded:
        name = item.rule.rule
        if name in first:
            src = item.source
            errors.append(RuleError(f"rule name {name!r} is already used at {first[name]}; rule names must be unique", src.path, src.line, src.column))
        else:
            first[name] = item.source
    if errors:
        raise RuleSetError(errors)
    return RuleSet(
        rules=[item.rule for item in loaded],
        sources={item.rule.rule: item.source for item in loaded},
        files=tuple(str(p) for p in files),
    )
