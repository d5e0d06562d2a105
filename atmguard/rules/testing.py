"""Rule tests: YAML cases beside the rules (`*.test.yaml`), run through the real RuleEngine.

A test file is a list of cases (or a mapping with `start:`, `defaults:` and `cases:`):

    - name: coached transfer fires
      start: 2026-02-14T11:00:00+05:00      # base for relative times like +90s
      events:                                # contract events; ids, camera, started_at filled in
        - {behavior: on_phone, ts: +0s, duration_s: 75, confidence: 0.9}
      expect:
        - {rule: coached-transfer, atm_id: ATM-1}          # fires at least once
        - {rule: long-call-no-money, atm_id: ATM-1, count: 0}  # must not fire

Scope: a case checks the rules its file names in any `expect:` (all rules when the file names
none, or the rules listed in a top-level `rules:`); a firing of a rule in scope that no
expectation names fails the case. Each case runs on a fresh engine, events in time order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from atmguard.core import yamlpos
from atmguard.core.contracts import (
    BANK_EVENT_TYPES,
    BEHAVIORS,
    BankEvent,
    BehaviorFact,
    Intervention,
    parse_event,
)
from atmguard.core.durations import parse_duration
from atmguard.core.errors import EventError, RuleError, RuleSetError
from atmguard.rules.checks import did_you_mean
from atmguard.rules.loader import RULE_SUFFIXES, TEST_SUFFIXES, is_test_content, is_test_file
from atmguard.rules.ruleset import RuleSet, load_rules

CASE_KEYS = ("name", "start", "defaults", "events", "expect")
EXPECT_KEYS = ("rule", "atm_id", "count", "mode", "message_contains")
FILE_KEYS = ("start", "defaults", "rules", "cases")

Event = BehaviorFact | BankEvent


@dataclass
class Expectation:
    """`{rule, atm_id, count}`: the rule fires at this ATM (count times exactly, when given)."""

    rule: str
    atm_id: str
    count: int | None = None
    mode: str | None = None
    message_contains: str | None = None


@dataclass
class Case:
    """One named scenario: events in, expected interventions out."""

    name: str
    path: str
    line: int
    events: list[Event] = field(default_factory=list)
    expect: list[Expectation] = field(default_factory=list)
    scope: frozenset[str] | None = None
    errors: list[RuleError] = field(default_factory=list)


@dataclass
class CaseResult:
    """What a case did: pass/fail, why, and every intervention it produced."""

    case: Case
    passed: bool
    problems: list[str]
    interventions: list[Intervention]

    def line(self) -> str:
        """One line for the report: `PASS path:line name` or `FAIL path:line name: why`."""
        head = f"{'PASS' if self.passed else 'FAIL'} {self.case.path}:{self.case.line} {self.case.name}"
        return head if self.passed else head + ": " + "; ".join(self.problems)


# --------------------------------------------------------------------------- reading


def _err(tree: Any, loc: tuple[str | int, ...], path: str, message: str, at_key: bool = False) -> RuleError:
    line, col = yamlpos.position(tree, loc, at_key=at_key)
    return RuleError(message, path, line, col)


def _time(value: Any, start: datetime | None) -> str:
    """RFC 3339 as written, or `+90s` / `+5m` relative to the case's `start`."""
    if isinstance(value, str) and value.strip().startswith("+"):
        if start is None:
            raise ValueError(f"{value!r} is relative: set `start:` on the case or the file")
        return (start + timedelta(seconds=parse_duration(value.strip()[1:]))).isoformat()
    return str(value)


def _start(value: Any) -> datetime:
    try:
        ts = datetime.fromisoformat(str(value))
    except ValueError:
        raise ValueError(f"start {value!r} is not an RFC 3339 time like 2026-02-14T11:00:00+05:00") from None
    if ts.tzinfo is None:
        raise ValueError(f"start {value!r} needs a zone, e.g. +05:00")
    return ts


def _event(raw: dict[str, Any], defaults: dict[str, Any], start: datetime | None, n: int) -> Event:
    data = {**defaults, **raw}
    if "type" not in data:
        data["type"] = "behavior" if "behavior" in data else data.get("type")
    is_behavior = data.get("type") == "behavior"
    for key in ("ts", "started_at"):
        if key in data:
            data[key] = _time(data[key], start)
    data.setdefault("id", f"ev-{n}")
    if is_behavior:
        data.setdefault("camera_id", "cam-1")
        if "started_at" not in data and "ts" in data and isinstance(data.get("duration_s"), int | float):
            ts = datetime.fromisoformat(data["ts"])
            data["started_at"] = (ts - timedelta(seconds=float(data["duration_s"]))).isoformat()
    else:
        data.setdefault("bank_id", "bank-1")
        data.setdefault("status", "completed")
    return parse_event(data)


def load_cases(path: Path, ruleset: RuleSet | None) -> tuple[list[Case], list[RuleError]]:
    """Cases of one test file; file-level problems come back as errors, case problems on the case."""
    p = str(path)
    try:
        tree = yamlpos.read_yaml(path)
    except RuleError as exc:
        return [], [exc]
    root: Any = tree
    file_start: datetime | None = None
    file_defaults: dict[str, Any] = {}
    scope_raw: Any = None
    cases_loc: tuple[str | int, ...] = ()
    errors: list[RuleError] = []
    if isinstance(tree, dict):
        for key in tree:
            if key not in FILE_KEYS:
                errors.append(_err(tree, (key,), p, f"unknown key `{key}`{did_you_mean(str(key), FILE_KEYS)}; a test file has {', '.join(FILE_KEYS)}", True))
        if "start" in tree:
            try:
                file_start = _start(tree["start"])
            except ValueError as exc:
                errors.append(_err(tree, ("start",), p, str(exc)))
        file_defaults = yamlpos.plain(tree.get("defaults") or {})
        scope_raw = yamlpos.plain(tree.get("rules"))
        root, cases_loc = tree.get("cases"), ("cases",)
    if not isinstance(root, list) or not root:
        errors.append(_err(tree, cases_loc, p, "a rule test file is a list of cases (`- name: ...`, `events:`, `expect:`)"))
        return [], errors
    cases: list[Case] = []
    named: set[str] = set()
    for i, node in enumerate(root):
        loc = (*cases_loc, i)
        line, _ = yamlpos.position(tree, loc)
        case = Case(name=f"case {i + 1}", path=p, line=line)
        cases.append(case)
        if not isinstance(node, dict):
            case.errors.append(_err(tree, loc, p, "a case is a mapping with `name:`, `events:` and `expect:`"))
            continue
        case.name = str(node.get("name") or case.name)
        for key in node:
            if key not in CASE_KEYS:
                case.errors.append(_err(tree, (*loc, key), p, f"unknown key `{key}`{did_you_mean(str(key), CASE_KEYS)}; a case has {', '.join(CASE_KEYS)}", True))
        start = file_start
        if "start" in node:
            try:
                start = _start(node["start"])
            except ValueError as exc:
                case.errors.append(_err(tree, (*loc, "start"), p, str(exc)))
        defaults = {**file_defaults, **yamlpos.plain(node.get("defaults") or {})}
        events = node.get("events")
        if not isinstance(events, list):
            case.errors.append(_err(tree, loc + (("events",) if "events" in node else ()), p, "`events:` is a list of events"))
            events = []
        for j, raw in enumerate(events):
            eloc = (*loc, "events", j)
            if not isinstance(raw, dict):
                case.errors.append(_err(tree, eloc, p, "an event is a mapping, e.g. {behavior: on_phone, ts: +0s, ...}"))
                continue
            try:
                case.events.append(_event(yamlpos.plain(raw), defaults, start, j + 1))
            except ValueError as exc:
                case.errors.append(_err(tree, eloc, p, str(exc)))
            except EventError as exc:
                fld = (exc.field or "").split(".")[0]
                at = (*eloc, fld) if fld and fld in raw else eloc
                msg = f"event: {exc.field}: {exc.message}" if exc.field else f"event: {exc.message}"
                if fld in ("type", "behavior") or (not fld and "type" not in raw and "behavior" not in raw):
                    msg += f" (a behaviour event has `behavior:` one of {', '.join(BEHAVIORS)}; a bank event `type:` one of {', '.join(BANK_EVENT_TYPES)})"
                case.errors.append(_err(tree, at, p, msg))
        expect = node.get("expect")
        if not isinstance(expect, list):
            case.errors.append(_err(tree, loc + (("expect",) if "expect" in node else ()), p, "`expect:` is a list of {rule, atm_id} (empty: nothing fires)"))
            expect = []
        for j, raw in enumerate(expect):
            xloc = (*loc, "expect", j)
            exp = _expectation(tree, xloc, p, raw, ruleset, case.errors)
            if exp is not None:
                case.expect.append(exp)
                named.add(exp.rule)
    if isinstance(scope_raw, list):
        scope: frozenset[str] | None = frozenset(str(r) for r in scope_raw)
    elif scope_raw in (None, "all"):
        scope = frozenset(named) if named and scope_raw is None else None
    else:
        errors.append(_err(tree, ("rules",), p, "`rules:` is a list of rule names (the scope of these tests), or `all`"))
        scope = None
    for case in cases:
        case.scope = scope
    return cases, errors


def _expectation(tree: Any, loc: tuple[str | int, ...], path: str, raw: Any, ruleset: RuleSet | None, errors: list[RuleError]) -> Expectation | None:
    if not isinstance(raw, dict):
        errors.append(_err(tree, loc, path, "an expectation is a mapping: {rule: name, atm_id: ATM, count: n}"))
        return None
    ok = True
    for key in raw:
        if key not in EXPECT_KEYS:
            errors.append(_err(tree, (*loc, key), path, f"unknown key `{key}`{did_you_mean(str(key), EXPECT_KEYS)}; an expectation has {', '.join(EXPECT_KEYS)}", True))
            ok = False
    for key in ("rule", "atm_id"):
        if not isinstance(raw.get(key), str) or not raw.get(key):
            errors.append(_err(tree, loc + ((key,) if key in raw else ()), path, f"`{key}:` is required (text)"))
            ok = False
    count = raw.get("count")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
        errors.append(_err(tree, (*loc, "count"), path, "`count:` is a whole number (0: must not fire)"))
        ok = False
    mode = raw.get("mode")
    if mode is not None and mode not in ("enforce", "shadow"):
        errors.append(_err(tree, (*loc, "mode"), path, "`mode:` is enforce or shadow"))
        ok = False
    name = raw.get("rule")
    if ok and ruleset is not None:
        rule = ruleset.get(str(name))
        if rule is None:
            names = [r.rule for r in ruleset.rules]
            errors.append(_err(tree, (*loc, "rule"), path, f"no rule named {name!r}{did_you_mean(str(name), names)} in the rules under test"))
            ok = False
        elif not rule.enabled and count != 0:
            errors.append(_err(tree, (*loc, "rule"), path, f"rule {name!r} is disabled (enabled: false), so it never fires"))
            ok = False
    if not ok:
        return None
    contains = raw.get("message_contains")
    return Expectation(str(name), str(raw["atm_id"]), count, mode, None if contains is None else str(contains))


# --------------------------------------------------------------------------- running


def run_case(case: Case, ruleset: RuleSet) -> CaseResult:
    """Feed the case's events (time order, ties in written order) to a fresh engine and compare."""
    if case.errors:
        return CaseResult(case, False, [str(e) for e in case.errors], [])
    from atmguard.rules.runtime import RuleEngine

    engine = RuleEngine(ruleset)
    fired: list[Intervention] = []
    try:
        for event in sorted(case.events, key=lambda e: e.ts):
            fired.extend(engine.feed(event))
    finally:
        engine.close()
    return CaseResult(case, *_compare(case, fired), fired)


def _compare(case: Case, fired: list[Intervention]) -> tuple[bool, list[str]]:
    problems: list[str] = []
    got = Counter((iv.rule, iv.atm_id) for iv in fired)
    for exp in case.expect:
        mine = [iv for iv in fired if iv.rule == exp.rule and iv.atm_id == exp.atm_id]
        n = len(mine)
        if exp.count is None and n == 0:
            problems.append(f"{exp.rule} at {exp.atm_id}: expected to fire, did not")
        elif exp.count is not None and n != exp.count:
            problems.append(f"{exp.rule} at {exp.atm_id}: expected {exp.count}, fired {n}")
        if n and exp.mode and any(iv.mode != exp.mode for iv in mine):
            problems.append(f"{exp.rule} at {exp.atm_id}: expected mode {exp.mode}, got {mine[0].mode}")
        if n and exp.message_contains and not any(exp.message_contains in iv.message for iv in mine):
            problems.append(f"{exp.rule} at {exp.atm_id}: message {mine[0].message!r} does not contain {exp.message_contains!r}")
    expected = {(e.rule, e.atm_id) for e in case.expect}
    for (rule, atm), n in sorted(got.items()):
        in_scope = case.scope is None or rule in case.scope
        if in_scope and (rule, atm) not in expected:
            problems.append(f"{rule} at {atm}: fired {n} time(s) unexpectedly")
    return not problems, problems


# --------------------------------------------------------------------------- finding tests


@dataclass
class Target:
    """Test files to run and the rules folder/files they test."""

    rules: list[Path]
    tests: list[Path]


def find_test_files(folder: Path) -> list[Path]:
    """Rule test files under a folder, sorted: `*.test.yaml`, and YAML files that hold test cases."""
    out: list[Path] = []
    for p in sorted(folder.rglob("*")):
        if not p.is_file() or any(part.startswith(".") for part in p.relative_to(folder).parts):
            continue
        if p.name.endswith(TEST_SUFFIXES) or (p.suffix in RULE_SUFFIXES and is_test_content(p)):
            out.append(p)
    return out


def targets(paths: Iterable[Path], rules: Path | None = None) -> Iterator[Target]:
    """What each PATH means: a rules folder (its tests), a test file (rules beside it), a rule file (its test)."""
    for path in paths:
        if path.is_dir():
            yield Target([rules or path], find_test_files(path))
        elif is_test_file(path) or is_test_content(path):
            yield Target([rules or path.parent], [path])
        else:
            stem = path.name.rsplit(".", 1)[0]
            sibling = [path.parent / f"{stem}{s}" for s in TEST_SUFFIXES]
            yield Target([rules or path.parent], [p for p in sibling if p.exists()])


@dataclass
class Report:
    """Every case result, plus errors that stopped a file from running."""

    results: list[CaseResult] = field(default_factory=list)
    errors: list[RuleError] = field(default_factory=list)
    rule_errors: list[RuleError] = field(default_factory=list)
    files: int = 0

    @property
    def passed(self) -> int:
        return sum(r.passed for r in self.results)

    @property
    def failed(self) -> int:
        return len(self.results) - self.passed + len(self.errors)


def run_tests(paths: Iterable[Path], rules: Path | None = None, on_result: Any = None) -> Report:
    """Run the rule tests of each PATH; `on_result(CaseResult | RuleError)` is told as they finish."""
    report = Report()
    cache: dict[tuple[Path, ...], RuleSet | RuleSetError] = {}
    for target in targets(paths, rules):
        key = tuple(p.resolve() for p in target.rules)
        if key not in cache:
            try:
                cache[key] = load_rules(target.rules)
            except RuleSetError as exc:
                cache[key] = exc
                report.rule_errors.extend(exc.errors)
        loaded = cache[key]
        for test_path in target.tests:
            report.files += 1
            ruleset = loaded if isinstance(loaded, RuleSet) else None
            cases, errors = load_cases(test_path, ruleset)
            for err in errors:
                report.errors.append(err)
                if on_result:
                    on_result(err)
            for case in cases:
                if ruleset is None:
                    assert isinstance(loaded, RuleSetError)
                    where = ", ".join(str(p) for p in target.rules)
                    result = CaseResult(case, False, [f"the rules in {where} have {len(loaded.errors)} error(s); run `atmguard rules check {where}`"], [])
                else:
                    result = run_case(case, ruleset)
                report.results.append(result)
                if on_result:
                    on_result(result)
    return report
