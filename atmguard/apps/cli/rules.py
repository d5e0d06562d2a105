"""Commands of the rules part: `rules check`, `rules test` and `replay`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import typer

rules_app = typer.Typer(
    help="Write, check and test rules (YAML). Rule tests are *.test.yaml files beside the rules.",
    no_args_is_help=True,
)


@rules_app.command("check")
def check_command(
    paths: list[Path] = typer.Argument(..., help="Rule files or folders (folders are searched recursively)."),
) -> None:
    """Check rules (and the rule tests beside them); print every error as path:line:col: message.

    Exits 1 on any error, 0 when everything is valid.
    """
    from atmguard.core.errors import RuleSetError
    from atmguard.rules.loader import is_test_content, is_test_file
    from atmguard.rules.ruleset import RuleSet, load_rules
    from atmguard.rules.testing import find_test_files, load_cases

    errors = []
    given_tests = [p for p in paths if p.is_file() and (is_test_file(p) or is_test_content(p))]
    rule_paths = [p for p in paths if p not in given_tests]
    test_paths = list(given_tests)
    ruleset: RuleSet | None = None
    try:
        if rule_paths:
            ruleset = load_rules(rule_paths)
    except RuleSetError as exc:
        errors.extend(exc.errors)
    for folder in (p for p in rule_paths if p.is_dir()):
        test_paths.extend(find_test_files(folder))
    beside: dict[Path, RuleSet | None] = {}
    for test_path in dict.fromkeys(test_paths):
        rules_for_test = ruleset
        if not rule_paths:  # only test files given: their rules are the folder they are in
            folder = test_path.parent
            if folder not in beside:
                try:
                    beside[folder] = load_rules([folder])
                except RuleSetError as exc:
                    beside[folder] = None
                    errors.extend(exc.errors)
            rules_for_test = beside[folder]
        cases, file_errors = load_cases(test_path, rules_for_test)
        errors.extend(file_errors)
        for case in cases:
            errors.extend(case.errors)
    unique = list(dict.fromkeys((e.path, e.line, e.column, e.message) for e in errors))
    for path, line, col, message in unique:
        typer.echo(f"{path}:{line}:{col}: {message}")
    if unique:
        files = len({u[0] for u in unique})
        typer.echo(f"{len(unique)} error(s) in {files} file(s)", err=True)
        raise typer.Exit(1)
    if ruleset is None and beside:
        ruleset = next((r for r in beside.values() if r is not None), None)
    n_rules = len(ruleset.rules) if ruleset else 0
    parts = [f"{n_rules} rule(s) in {len(ruleset.files) if ruleset else 0} file(s)"]
    if ruleset:
        disabled = sum(not r.enabled for r in ruleset.rules)
        shadow = sum(r.mode == "shadow" for r in ruleset.enabled)
        if disabled:
            parts.append(f"{disabled} disabled")
        if shadow:
            parts.append(f"{shadow} in shadow mode")
    if test_paths:
        parts.append(f"{len(set(test_paths))} test file(s)")
    typer.echo("OK: " + ", ".join(parts))


@rules_app.command("test")
def test_command(
    paths: list[Path] = typer.Argument(..., help="A rules folder (runs its *.test.yaml), a test file, or a rule file."),
    rules: Path | None = typer.Option(None, "--rules", help="Rules to test against (default: the folder of each PATH)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Also list the interventions of each case."),
) -> None:
    """Run rule tests: a line per case, then `N passed, M failed`; exits 1 on any failure."""
    from atmguard.core.errors import RuleError
    from atmguard.rules.replay import human_lines
    from atmguard.rules.testing import CaseResult, run_tests

    for path in paths:
        if not path.exists():
            typer.echo(f"{path}:1:1: no such file or folder")
            typer.echo("0 passed, 1 failed")
            raise typer.Exit(1)

    def show(item: CaseResult | RuleError) -> None:
        if isinstance(item, RuleError):
            typer.echo(f"FAIL {item}")
            return
        typer.echo(item.line())
        if verbose or not item.passed:
            for iv in item.interventions:
                typer.echo("    fired: " + human_lines(iv)[0].strip())

    report = run_tests(paths, rules, on_result=show)
    for err in report.rule_errors:
        typer.echo(str(err))
    if not report.results and not report.errors:
        typer.echo("no rule tests found (name them *.test.yaml, beside the rules)", err=True)
        typer.echo("0 passed, 0 failed")
        raise typer.Exit(1)
    typer.echo(f"{report.passed} passed, {report.failed} failed")
    if report.failed:
        raise typer.Exit(1)


def replay_command(
    events: list[Path] = typer.Argument(..., help="Recorded events, JSONL (one event per line); merged in event-time order."),
    rules: Path = typer.Option(Path("rules"), "--rules", help="Rules folder (or file)."),
    jsonl: bool = typer.Option(False, "--jsonl", help="Print one intervention JSON per line and nothing else on stdout."),
    labels: Path | None = typer.Option(None, "--labels", help="Known real scams (YAML or JSONL): print precision, recall, misses."),
    strict: bool = typer.Option(False, "--strict", help="Refuse to replay when any event line is bad (instead of skipping it)."),
) -> None:
    """Replay recorded events through the rules, as the engine would (the backtest). Deterministic."""
    from atmguard.core.contracts import Intervention
    from atmguard.core.errors import EventError, RuleSetError
    from atmguard.rules.replay import (
        Event,
        human_lines,
        iter_event_lines,
        load_labels,
        replay_iter,
        score,
        score_lines,
        stream_events,
    )
    from atmguard.rules.ruleset import load_rules

    try:
        ruleset = load_rules([rules])
    except RuleSetError as exc:
        for err in exc.errors:
            typer.echo(str(err), err=True)
        raise typer.Exit(1) from None
    label_list = []
    if labels is not None:
        try:
            label_list = load_labels(labels)
        except (EventError, OSError) as exc:
            typer.echo(f"labels: {exc}", err=True)
            raise typer.Exit(1) from None
    if strict:
        bad_lines = [item for item in iter_event_lines(events) if isinstance(item, EventError)]
        for bad_line in bad_lines:
            typer.echo(f"bad event: {bad_line}", err=True)
        if bad_lines:
            raise typer.Exit(1)

    bad: list[EventError] = []
    told = 0
    counted = 0

    def tell_bad() -> None:
        nonlocal told
        for bad_line in bad[told:]:
            typer.echo(f"skipped bad event: {bad_line}", err=True)
        told = len(bad)

    def counting(stream: Iterator[Event]) -> Iterator[Event]:
        nonlocal counted
        for event in stream:
            counted += 1
            tell_bad()
            yield event

    interventions: list[Intervention] = []
    for iv in replay_iter(ruleset, counting(stream_events(events, bad))):
        interventions.append(iv)
        if jsonl:
            typer.echo(iv.to_json())
        else:
            for line in human_lines(iv):
                typer.echo(line)
    tell_bad()
    if not jsonl:
        shadow = sum(iv.mode == "shadow" for iv in interventions)
        typer.echo(
            f"{counted} events, {len(interventions)} interventions"
            + (f" ({shadow} shadow)" if shadow else "")
            + f", {len(ruleset.enabled)} rules"
            + (f", {len(bad)} bad lines skipped" if bad else "")
        )
    if labels is not None:
        for line in score_lines(score(interventions, label_list, ruleset)):
            typer.echo(line, err=jsonl)


def register(app: typer.Typer) -> None:
    """Add this part's commands to the CLI."""
    app.add_typer(rules_app, name="rules")
    app.command("replay")(replay_command)
