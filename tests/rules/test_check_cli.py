"""`atmguard rules check PATH...` and the JSON Schema editors use, as an author would run them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from atmguard.rules.jsonschema import rule_file_schema
from tests.conftest import REPO
from tests.rules.langkit import ISSUE_RULE, run, write

LINE = re.compile(r"^(?P<path>[^:]+):(?P<line>\d+):(?P<col>\d+): (?P<msg>.+)$")


def test_valid_rules_exit_0_with_an_ok_summary(tmp_path: Path):
    write(tmp_path, "coached-transfer.yaml", ISSUE_RULE)
    result = run("rules", "check", tmp_path)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("OK: 1 rule(s) in 1 file(s)")


def test_every_error_of_every_file_as_path_line_col_message_and_exit_1(tmp_path: Path):
    bad = write(tmp_path, "bad.yaml", """\
        rule: coached-transfer
        version: 1
        severity: critical
        when:
          all:
            - event: on_fone
            - event: transfer
              as: first
              where: {amount: {neq: 0}, curency: KZT}
            - event: transfer
              where: {amount: {gt: frist.amount}}
          within: 5 minutes
        cooldown: 10m
        message: "{first.amout}"
        """)
    other = write(tmp_path, "sub/other.yaml", "rule: other\nversion: 1\nseverity: low\nwhen: {all: [{event: deposit, where: {amount: {gte: '1 000'}}}]}\n")
    result = run("rules", "check", tmp_path)
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    parsed = [LINE.match(line) for line in lines]
    assert all(parsed), lines
    got = {(m["path"], int(m["line"]), int(m["col"])): m["msg"] for m in parsed if m}
    assert got[(str(bad), 6, 14)].startswith("unknown event 'on_fone' (did you mean 'on_phone'?)")
    assert got[(str(bad), 9, 24)].startswith("unknown operator 'neq'; write `ne`")
    assert got[(str(bad), 9, 33)].startswith("unknown field 'curency' for transfer events (did you mean 'currency'?)")
    assert got[(str(bad), 11, 28)].startswith("'frist.amount' refers to an unknown alias 'frist' (did you mean 'first'?)")
    assert got[(str(bad), 12, 11)] == "within: '5 minutes' is not a duration; write it like 90s, 5m or 1h"
    assert got[(str(bad), 14, 10)].startswith("`{first.amout}` in the message: unknown field 'amout' for transfer events")
    assert got[(str(other), 4, 53)].startswith("amount is a number, not '1 000'; write 1000 without quotes")
    assert len(lines) == 7
    assert "7 error(s) in 2 file(s)" in result.stderr


def test_a_missing_path_is_an_error(tmp_path: Path):
    result = run("rules", "check", tmp_path / "nope.yaml")
    assert result.exit_code == 1
    assert result.stdout.strip() == f"{tmp_path / 'nope.yaml'}:1:1: no such file or folder"


def test_check_also_checks_the_rule_tests_beside_the_rules(tmp_path: Path):
    write(tmp_path, "r.yaml", ISSUE_RULE)
    tests = write(tmp_path, "r.test.yaml", """\
        - name: typo in the expected rule
          events: []
          expect:
            - {rule: coached-transfers, atm_id: A}
        - name: a bad event
          events:
            - {type: transfer, id: t1, bank_id: b, ts: "2026-02-12T14:00:00+05:00", amount: -5, currency: KZT, status: completed}
          expect: []
        """)
    result = run("rules", "check", tmp_path)
    assert result.exit_code == 1
    assert f"{tests}:4:14: no rule named 'coached-transfers' (did you mean 'coached-transfer'?)" in result.stdout
    assert f"{tests}:7:85: event: amount: Input should be greater than or equal to 0" in result.stdout


def test_a_yaml_syntax_error_points_at_the_problem(tmp_path: Path):
    path = write(tmp_path, "r.yaml", "rule: r\nversion: 1\nseverity: low\nwhen:\n  all: [{event: present}\n")
    result = run("rules", "check", path)
    assert result.exit_code == 1
    [line] = result.stdout.splitlines()
    assert line.startswith(f"{path}:6:1: not valid YAML")


def test_default_pack_checks_clean():
    result = run("rules", "check", REPO / "rules")
    assert result.exit_code == 0, result.output
    assert "OK: " in result.stdout and "1 in shadow mode" in result.stdout


# --------------------------------------------------------------------------- JSON Schema for editors


def _validator():
    import jsonschema_rs

    return jsonschema_rs.Draft7Validator(rule_file_schema())


def test_published_rule_schema_is_current():
    published = json.loads((REPO / "docs" / "schemas" / "rule.schema.json").read_text(encoding="utf-8"))
    assert published == rule_file_schema()


def test_schema_accepts_the_issue_example_and_every_pack_rule_which_point_editors_at_it():
    validator = _validator()
    assert validator.is_valid(yaml.safe_load(ISSUE_RULE))
    for path in sorted((REPO / "rules").glob("*.yaml")):
        if path.name.endswith(".test.yaml"):
            continue
        text = path.read_text(encoding="utf-8")
        assert text.startswith("# yaml-language-server: $schema=../docs/schemas/rule.schema.json"), path
        assert validator.is_valid(yaml.safe_load(text)), path


def test_schema_rejects_what_an_editor_should_underline():
    validator = _validator()
    good = yaml.safe_load(ISSUE_RULE)
    assert validator.is_valid([good, {**good, "rule": "other"}])
    for broken in (
        {**good, "severity": "urgent"},
        {**good, "colour": "red"},
        {**good, "when": {**good["when"], "within": "5 minutes"}},
        {**good, "when": {**good["when"], "all": [{"event": "on_fone"}]}},
        {**good, "when": {**good["when"], "all": [{"event": "transfer", "where": {"amount": {"neq": 1}}}]}},
        {**good, "when": {**good["when"], "all": [{"event": "on_phone", "where": {"amount": 1}}]}},
        {**good, "when": {**good["when"], "all": [{"event": "transfer", "where": {"status": "complete"}}]}},
    ):
        assert not validator.is_valid(broken), broken
