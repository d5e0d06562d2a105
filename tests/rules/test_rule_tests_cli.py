"""`atmguard rules test PATH...`: YAML cases beside the rules, run through the real RuleEngine."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.rules.langkit import ISSUE_RULE, run, write

CASES = """\
start: 2026-02-12T14:00:00+05:00
defaults: {atm_id: A1, confidence: 0.9, bank_id: halyk, currency: KZT}
cases:
  - name: fires
    events:
      - {behavior: on_phone, ts: +0s, duration_s: 75}
      - {behavior: looking_around, ts: +20s, duration_s: 20, count: 4, window_s: 60}
      - {type: transfer, ts: +60s, amount: 400000, payee_new: true}
    expect:
      - {rule: coached-transfer, atm_id: A1, count: 1}
  - name: wrongly expects a firing
    events:
      - {type: transfer, ts: +0s, amount: 400000, payee_new: true}
    expect:
      - {rule: coached-transfer, atm_id: A1}
"""


@pytest.fixture
def pack(tmp_path: Path) -> Path:
    write(tmp_path, "coached-transfer.yaml", ISSUE_RULE)
    return tmp_path


def test_a_line_per_case_then_n_passed_m_failed_and_exit_1_on_failure(pack: Path):
    tests = write(pack, "coached-transfer.test.yaml", CASES)
    result = run("rules", "test", pack)
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0] == f"PASS {tests}:4 fires"
    assert lines[1] == f"FAIL {tests}:11 wrongly expects a firing: coached-transfer at A1: expected to fire, did not"
    assert lines[-1] == "1 passed, 1 failed"


def test_all_passing_exits_0(pack: Path):
    write(pack, "coached-transfer.test.yaml", CASES.split("  - name: wrongly")[0])
    result = run("rules", "test", pack)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == "1 passed, 0 failed"


def test_path_may_be_a_test_file_or_a_rule_file_and_rules_are_found_beside_it(pack: Path):
    tests = write(pack, "coached-transfer.test.yaml", CASES)
    for path in (tests, pack / "coached-transfer.yaml"):
        result = run("rules", "test", path)
        assert result.stdout.splitlines()[-1] == "1 passed, 1 failed", result.output


def test_misnamed_test_files_are_recognised_by_content(pack: Path):
    write(pack, "tests/coached.yaml", CASES)
    check = run("rules", "check", pack)
    assert check.exit_code == 0 and "1 test file(s)" in check.stdout, check.output
    result = run("rules", "test", pack)
    assert result.stdout.splitlines()[-1] == "1 passed, 1 failed"


def test_rules_option_points_tests_elsewhere_at_a_rules_folder(pack: Path, tmp_path_factory: pytest.TempPathFactory):
    other = tmp_path_factory.mktemp("elsewhere")
    tests = write(other, "t.test.yaml", CASES)
    assert run("rules", "test", tests).stdout.splitlines()[-1] == "0 passed, 2 failed"  # no rules beside it
    result = run("rules", "test", tests, "--rules", pack)
    assert result.stdout.splitlines()[-1] == "1 passed, 1 failed"


def test_full_rfc3339_events_in_a_plain_list_of_cases(pack: Path):
    write(pack, "plain.test.yaml", """\
        - name: full events
          events:
            - {type: behavior, id: f1, atm_id: A9, camera_id: c1, behavior: on_phone, ts: "2026-02-12T14:00:00+05:00", started_at: "2026-02-12T13:58:00+05:00", duration_s: 120, confidence: 0.7}
            - {type: behavior, id: f2, atm_id: A9, camera_id: c1, behavior: looking_around, ts: "2026-02-12T09:00:30Z", started_at: "2026-02-12T09:00:00Z", duration_s: 30, count: 3, confidence: 0.7}
            - {type: transfer, id: t1, bank_id: b, atm_id: A9, ts: "2026-02-12T14:01:00+05:00", amount: 300000, currency: KZT, payee_new: true, status: initiated}
          expect:
            - {rule: coached-transfer, atm_id: A9, count: 1, message_contains: "A9: on the phone 120s, looked around 3 times, transfer 300000 KZT"}
        """)
    result = run("rules", "test", pack)
    assert result.exit_code == 0, result.output


def test_bad_cases_fail_with_file_line_col(pack: Path):
    tests = write(pack, "bad.test.yaml", """\
        - name: relative time without a start
          events:
            - {behavior: on_phone, ts: +5s, duration_s: 75, atm_id: A1, confidence: 1}
          expect: []
        - name: a disabled or unknown rule
          events: []
          expect:
            - {rule: coached-transfr, atm_id: A1}
            - {rule: coached-transfer, atm_id: A1, cnt: 2}
        """)
    result = run("rules", "test", tests)
    assert result.exit_code == 1
    out = result.stdout
    assert f"FAIL {tests}:1 relative time without a start: {tests}:3:7: '+5s' is relative: set `start:`" in out
    assert f"{tests}:8:14: no rule named 'coached-transfr' (did you mean 'coached-transfer'?)" in out
    assert f"{tests}:9:44: unknown key `cnt` (did you mean 'count'?)" in out
    assert out.splitlines()[-1] == "0 passed, 2 failed"


def test_broken_rules_fail_every_case_and_show_the_rule_errors(pack: Path):
    write(pack, "broken.yaml", "rule: broken\nversion: 1\nseverity: low\nwhen: {all: [{event: teleport}]}\n")
    write(pack, "t.test.yaml", CASES)
    result = run("rules", "test", pack)
    assert result.exit_code == 1
    assert f"{pack / 'broken.yaml'}:4:22: unknown event 'teleport'" in result.stdout
    assert result.stdout.splitlines()[-1] == "0 passed, 2 failed"


def test_no_tests_found_is_a_failure(pack: Path):
    result = run("rules", "test", pack)
    assert result.exit_code == 1
    assert result.stdout.splitlines()[-1] == "0 passed, 0 failed"
    assert "*.test.yaml" in result.stderr


# --------------------------------------------------------------------------- the language's semantics, end to end

SEMANTICS_RULES = """\
- rule: any-glance
  version: 1
  severity: medium
  when:
    all:
      - event: on_phone
      - any:
          - event: looking_around
            where: {count: {gte: 3}}
          - all:
              - event: gaze_away
                where: {count: {gte: 2}}
              - event: present
    within: 2m
- rule: call-without-money
  version: 1
  severity: low
  when:
    all:
      - event: on_phone
        where: {duration_s: {gte: 100}}
    none:
      - event: withdrawal
        where: {amount: {gt: 0}}
    within: 2m
- rule: payee-pattern
  version: 1
  severity: high
  when:
    all:
      - event: deposit
        where:
          payee_ref: {matches: '^mule-[0-9]+$'}
          status: {not_in: [declined]}
          payee_new: null
- rule: two-transfers
  version: 1
  severity: critical
  when:
    all:
      - event: transfer
        as: first
      - event: transfer
        as: second
        where: {amount: {gte: first.amount}}
    within: 5m
- rule: transfer-then-call
  version: 1
  severity: low
  when:
    all:
      - event: transfer
        as: t
      - event: on_phone
    none:
      - event: withdrawal
        where: {amount: {gte: t.amount}}
    within: 5m
- rule: switched-off
  version: 1
  severity: low
  enabled: false
  when: {all: [{event: present}]}
- rule: on-trial
  version: 1
  severity: low
  mode: shadow
  when: {all: [{event: present, where: {camera_id: {in: [c-trial]}}}]}
"""

SEMANTICS_CASES = """\
start: 2026-02-12T10:00:00+05:00
defaults: {atm_id: A1, confidence: 0.9, bank_id: b, currency: KZT}
cases:
  - name: any - glances alone
    events:
      - {behavior: on_phone, ts: +0s, duration_s: 10}
      - {behavior: looking_around, ts: +10s, duration_s: 5, count: 3}
    expect: [{rule: any-glance, atm_id: A1, count: 1}]
  - name: any - the nested all needs both of its patterns
    events:
      - {behavior: on_phone, ts: +0s, duration_s: 10}
      - {behavior: gaze_away, ts: +10s, duration_s: 5, count: 2}
    expect: [{rule: any-glance, atm_id: A1, count: 0}]
  - name: any - nested all complete
    events:
      - {behavior: on_phone, ts: +0s, duration_s: 10}
      - {behavior: gaze_away, ts: +10s, duration_s: 5, count: 2}
      - {behavior: present, ts: +20s, duration_s: 30}
    expect: [{rule: any-glance, atm_id: A1, count: 1}]
  - name: none - no withdrawal, fires
    events:
      - {behavior: on_phone, ts: +0s, duration_s: 120}
    expect: [{rule: call-without-money, atm_id: A1, count: 1}]
  - name: none - a withdrawal in the window blocks it
    events:
      - {type: withdrawal, ts: +0s, amount: 5000}
      - {behavior: on_phone, ts: +60s, duration_s: 120}
    expect: [{rule: call-without-money, atm_id: A1, count: 0}]
  - name: none - a withdrawal at another ATM does not
    events:
      - {type: withdrawal, ts: +0s, amount: 5000, atm_id: A2}
      - {behavior: on_phone, ts: +60s, duration_s: 120}
    expect: [{rule: call-without-money, atm_id: A1, count: 1}]
  - name: matches, not_in and null (absent)
    events:
      - {type: deposit, ts: +0s, amount: 1, payee_ref: mule-42, id: d1}
      - {type: deposit, ts: +1s, amount: 1, payee_ref: mule-42x, id: d2}
      - {type: deposit, ts: +2s, amount: 1, payee_ref: mule-43, status: declined, id: d3}
      - {type: deposit, ts: +3s, amount: 1, payee_ref: mule-44, payee_new: true, id: d4}
    expect: [{rule: payee-pattern, atm_id: A1, count: 1}]
  - name: two patterns of one event type need two different events
    events:
      - {type: transfer, ts: +0s, amount: 100}
    expect: [{rule: two-transfers, atm_id: A1, count: 0}]
  - name: two transfers
    events:
      - {type: transfer, ts: +0s, amount: 100}
      - {type: transfer, ts: +60s, amount: 100}
    expect: [{rule: two-transfers, atm_id: A1, count: 1}]
  - name: none with a reference - a larger withdrawal blocks
    events:
      - {type: withdrawal, ts: +0s, amount: 500, atm_id: B1}
      - {type: transfer, ts: +10s, amount: 100, atm_id: B1}
      - {behavior: on_phone, ts: +20s, duration_s: 5, atm_id: B1}
    expect: [{rule: transfer-then-call, atm_id: B1, count: 0}]
  - name: none with a reference - a smaller withdrawal does not
    events:
      - {type: withdrawal, ts: +0s, amount: 50, atm_id: B1}
      - {type: transfer, ts: +10s, amount: 100, atm_id: B1}
      - {behavior: on_phone, ts: +20s, duration_s: 5, atm_id: B1}
    expect: [{rule: transfer-then-call, atm_id: B1, count: 1}]
  - name: disabled never fires, shadow fires marked shadow
    events:
      - {behavior: present, ts: +0s, duration_s: 1, camera_id: c-trial}
    expect:
      - {rule: switched-off, atm_id: A1, count: 0}
      - {rule: on-trial, atm_id: A1, count: 1, mode: shadow}
"""


def test_language_constructs_behave_as_documented(tmp_path: Path):
    write(tmp_path, "semantics.yaml", SEMANTICS_RULES)
    tests = write(tmp_path, "semantics.test.yaml", SEMANTICS_CASES)
    result = run("rules", "test", tmp_path, "--verbose")
    lines = result.stdout.splitlines()
    assert [line for line in lines if line.startswith("FAIL")] == [], result.stdout
    assert lines[-1] == "12 passed, 0 failed"
    assert result.exit_code == 0
    assert f"PASS {tests}:" in result.stdout


def test_out_of_scope_rules_are_ignored_but_in_scope_surprises_fail(tmp_path: Path):
    write(tmp_path, "semantics.yaml", SEMANTICS_RULES)
    # names only two-transfers: the other rules firing is none of this file's business
    write(tmp_path, "scoped.test.yaml", """\
        start: 2026-02-12T10:00:00+05:00
        defaults: {atm_id: A1, confidence: 0.9, bank_id: b, currency: KZT}
        cases:
          - name: calls fire other rules, ignored
            events:
              - {behavior: on_phone, ts: +0s, duration_s: 120}
              - {type: transfer, ts: +10s, amount: 1}
            expect: [{rule: two-transfers, atm_id: A1, count: 0}]
        """)
    # names no rule at all: everything that fires must be expected
    write(tmp_path, "quiet.test.yaml", """\
        - name: expects silence
          start: 2026-02-12T10:00:00+05:00
          events:
            - {behavior: on_phone, ts: +0s, duration_s: 120, atm_id: A1, confidence: 0.9}
          expect: []
        """)
    result = run("rules", "test", tmp_path)
    lines = result.stdout.splitlines()
    assert any(line.startswith("PASS") and "calls fire other rules, ignored" in line for line in lines)
    assert any(line.startswith("FAIL") and "call-without-money at A1: fired 1 time(s) unexpectedly" in line for line in lines)
    assert lines[-1] == "1 passed, 1 failed"
