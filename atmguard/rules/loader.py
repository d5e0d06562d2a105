"""Rule files -> validated Rule models, or every error of the file with its line and column.

A rule file holds one rule (a mapping) or a list of rules. Problems are found in two passes
over the same YAML tree: pydantic for shape (keys, types, durations, enums) and
`checks.RuleChecker` for meaning (events, fields, operators, references, messages). Both
report paths into the tree, which `yamlpos.locate` turns into `file:line:col`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from atmguard.core import yamlpos
from atmguard.core.contracts import Actions
from atmguard.core.errors import Position, RuleError, RuleSetError
from atmguard.rules.checks import Issue, check_rule_data, did_you_mean
from atmguard.rules.schema import Group, Pattern, Rule, When

RULE_SUFFIXES = (".yaml", ".yml")
TEST_SUFFIXES = (".test.yaml", ".test.yml")
"""Rule tests live beside the rules as `*.test.yaml`; they are never loaded as rules."""


@dataclass(frozen=True)
class RuleSource:
    """Where a rule was written."""

    path: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}"


@dataclass(frozen=True)
class LoadedRule:
    """A valid rule and its place in a file."""

    rule: Rule
    source: RuleSource


def is_test_file(path: Path) -> bool:
    """Rule test files (`*.test.yaml`) sit beside rules but are not rules."""
    return path.name.endswith(TEST_SUFFIXES)


def looks_like_tests(tree: Any) -> bool:
    """Rule tests by content (cases with `events:`/`expect:`), whatever the file is called."""
    if isinstance(tree, dict):
        return "rule" not in tree and ("cases" in tree or "expect" in tree or "events" in tree)
    return isinstance(tree, list) and bool(tree) and all(
        isinstance(item, dict) and "rule" not in item and ("expect" in item or "events" in item) for item in tree
    )


def is_test_content(path: Path) -> bool:
    """A YAML file that holds rule tests although it is not named *.test.yaml."""
    try:
        return looks_like_tests(yamlpos.read_yaml(path))
    except (RuleError, OSError):
        return False


def is_rule_file(path: Path) -> bool:
    """A YAML file that is not a rule test and not hidden."""
    return path.suffix in RULE_SUFFIXES and not is_test_file(path) and not path.name.startswith(".")


# --------------------------------------------------------------------------- pydantic errors -> words


def _model_at(data: Any, loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    """Which model validates the mapping at `loc` of a rule (for listing the keys it accepts)."""
    model: type[BaseModel] | None = Rule
    node = data
    for i, part in enumerate(loc):
        node = yamlpos.get(node, (part,))
        prev = loc[i - 1] if i else None
        if part == "when" and i == 0:
            model = When
        elif part == "actions" and i == 0:
            model = Actions
        elif isinstance(part, int) and prev in ("all", "any"):
            model = Pattern if isinstance(node, dict) and "event" in node else Group
        elif isinstance(part, int) and prev == "none":
            model = Pattern
        elif part in ("all", "any", "none"):
            continue
        else:
            model = None
    return model


def _keys_of(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


_HINTS = {
    "rule": "`rule:` is missing: give the rule a name, e.g. `rule: coached-transfer`",
    "version": "`version:` is missing: start with `version: 1` and raise it on every change",
    "severity": "`severity:` is missing: one of low, medium, high, critical",
    "when": "`when:` is missing: it says which events the rule waits for",
    "event": "`event:` is missing: a behaviour (on_phone, looking_around, ...) or transfer / withdrawal / deposit",
}


def _clean_loc(loc: tuple[Any, ...]) -> tuple[str | int, ...]:
    """Drop pydantic's union tags ('pattern' / 'group' after a list index)."""
    out: list[str | int] = []
    for i, part in enumerate(loc):
        if part in ("pattern", "group") and i and isinstance(loc[i - 1], int):
            continue
        out.append(part)
    return tuple(out)


def _pydantic_issue(data: Any, err: dict[str, Any]) -> Issue | None:
    loc = _clean_loc(tuple(err["loc"]))
    kind = err["type"]
    name = str(loc[-1]) if loc else "rule"
    if "where" in loc:
        return None  # conditions are checked, in words, by RuleChecker
    if kind == "missing":
        return Issue(loc[:-1], _HINTS.get(name, f"`{name}:` is missing"))
    if kind == "extra_forbidden":
        model = _model_at(data, loc[:-1])
        keys = _keys_of(model) if model else []
        msg = f"unknown key `{name}`{did_you_mean(name, keys)}"
        if keys:
            msg += "; allowed here: " + ", ".join(keys)
        return Issue(loc, msg, at_key=True)
    if kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        return Issue(loc, f"{name} must be {expected.replace(chr(39), '')}, not {err['input']!r}")
    if kind == "string_pattern_mismatch" and name == "rule":
        return Issue(loc, f"rule names use lower-case letters, digits, - and _ (e.g. coached-transfer), not {err['input']!r}")
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return Issue(loc, f"{name} must be a whole number, not {err['input']!r}")
    if kind == "greater_than_equal" and name == "version":
        return Issue(loc, "version starts at 1")
    if kind in ("bool_parsing", "bool_type"):
        return Issue(loc, f"{name} must be true or false, not {err['input']!r}")
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return Issue(loc, f"{name} must be a mapping of `key: value` lines")
    if kind == "list_type":
        return Issue(loc, f"{name} must be a list: `[a, b]` or `- item` lines")
    if kind in ("string_type",):
        return Issue(loc, f"{name} must be text")
    if kind == "value_error":
        msg = str(err["msg"]).removeprefix("Value error, ")
        if name in ("within", "cooldown"):
            msg = f"{name}: {msg}"
        return Issue(loc, msg)
    return Issue(loc, f"{name}: {err['msg']}")


# --------------------------------------------------------------------------- one rule, one file


def _under(loc: tuple[str | int, ...], prefixes: list[tuple[str | int, ...]]) -> bool:
    return any(loc[: len(p)] == p for p in prefixes)


def validate_rule_tree(tree: Any, plain_data: Any) -> tuple[Rule | None, list[Issue]]:
    """One rule's YAML tree -> the Rule, or every issue (paths relative to the rule)."""
    issues = check_rule_data(tree)
    try:
        rule = Rule.model_validate(plain_data)
    except ValidationError as exc:
        flagged = [i.loc for i in issues]
        for err in exc.errors():
            issue = _pydantic_issue(plain_data, dict(err))
            if issue is None or _under(issue.loc, flagged):
                continue
            if any(i.loc == issue.loc and i.message == issue.message for i in issues):
                continue
            issues.append(issue)
        return None, issues
    if issues:
        return None, issues
    from atmguard.rules.compiler import check_rule  # the compiler's last word (no durable import)

    problems = check_rule(rule)
    return (None, [Issue(("rule",), p) for p in problems]) if problems else (rule, [])


def load_rule_text(text: str, path: str = "<rules>") -> list[LoadedRule]:
    """Rules of one YAML text; raises RuleSetError with all its errors."""
    try:
        tree = yamlpos.load_yaml(text, path)
    except RuleError as exc:
        raise RuleSetError([exc]) from None
    rules, errors = _load_tree(tree, path)
    if errors:
        raise RuleSetError(errors)
    return rules


def load_rule_file(path: Path) -> tuple[list[LoadedRule], list[RuleError]]:
    """Rules of one file and every error in it (a file with errors gives no rules)."""
    try:
        tree = yamlpos.read_yaml(path)
    except RuleError as exc:
        return [], [exc]
    except OSError as exc:
        return [], [RuleError(f"cannot read the file: {exc.strerror or exc}", position=Position(str(path)))]
    if looks_like_tests(tree):
        return [], []  # rule tests misnamed: `atmguard rules test` still finds and runs them
    return _load_tree(tree, str(path))


def _load_tree(tree: Any, path: str) -> tuple[list[LoadedRule], list[RuleError]]:
    if tree is None:
        return [], [RuleError("the file is empty; a rule file holds one rule or a list of rules", path)]
    items: list[tuple[tuple[str | int, ...], Any]]
    if isinstance(tree, list):
        items = [((i,), item) for i, item in enumerate(tree)]
        if not items:
            return [], [RuleError("the list of rules is empty", path)]
    elif isinstance(tree, dict):
        items = [((), tree)]
    else:
        return [], [RuleError("a rule file holds one rule (a mapping) or a list of rules", path)]
    loaded: list[LoadedRule] = []
    errors: list[RuleError] = []
    for prefix, node in items:
        if not isinstance(node, dict):
            where = yamlpos.locate(tree, prefix, path=path)
            errors.append(RuleError("each rule is a mapping with `rule:`, `version:`, `severity:`, `when:` ...", position=where))
            continue
        if "rule" not in node and ("expect" in node or "events" in node or "cases" in node):
            where = yamlpos.locate(tree, prefix, path=path)
            errors.append(RuleError("this looks like a rule test, not a rule: name the file *.test.yaml", position=where))
            continue
        rule, issues = validate_rule_tree(node, yamlpos.plain(node))
        for issue in issues:
            where = yamlpos.locate(tree, prefix + issue.loc, path=path, at_key=issue.at_key)
            errors.append(RuleError(issue.message, position=where))
        if rule is not None:
            line, col = yamlpos.position(tree, prefix + ("rule",), at_key=True)
            loaded.append(LoadedRule(rule, RuleSource(path, line, col)))
    errors.sort(key=lambda e: (e.line, e.column))
    return loaded, errors
