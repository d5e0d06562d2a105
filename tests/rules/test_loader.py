"""The rule language as an author meets it: what is accepted, and every error with its position."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from atmguard.core.errors import Position, RuleSetError
from atmguard.rules import RuleSet, load_rules
from atmguard.rules.loader import load_rule_text
from atmguard.rules.schema import Group, Pattern
from tests.rules.langkit import ISSUE_RULE, write


def errors_of(text: str) -> list[str]:
    """`line:col: message` of every error in a rule text (fails if the text is valid)."""
    with pytest.raises(RuleSetError) as info:
        load_rule_text(textwrap.dedent(text), "r.yaml")
    return [f"{e.line}:{e.column}: {e.message}" for e in info.value.errors]


def rule_with(where_block: str, *, extra: str = "", message: str = '"{atm_id}"') -> str:
    """A valid rule skeleton with the given `when:` members (indented 4) and extra top-level lines."""
    body = textwrap.indent(textwrap.dedent(where_block).strip("\n"), "    ")
    return f"rule: r1\nversion: 1\nseverity: high\nwhen:\n  all:\n{body}\n  within: 5m\n{extra}message: {message}\n"


# --------------------------------------------------------------------------- accepted


def test_issue_example_is_accepted_exactly_with_its_semantics():
    [loaded] = load_rule_text(ISSUE_RULE, "coached-transfer.yaml")
    rule = loaded.rule
    assert (rule.rule, rule.version, rule.severity, rule.mode) == ("coached-transfer", 1, "critical", "enforce")
    assert rule.when.within == 300 and rule.cooldown == 600 and rule.when.by == "atm_id"
    on_phone, looking, transfer = rule.patterns()
    assert on_phone.where == {"duration_s": {"gte": 60}, "confidence": {"gte": 0.6}}
    assert looking.where == {"count": {"gte": 3}}
    assert (transfer.event, transfer.name) == ("transfer", "first_transfer")
    assert transfer.where == {"amount": {"gte": 300000}, "currency": "KZT", "payee_new": True}
    assert rule.actions.sms == ["patrol"] and rule.actions.radio == ["dispatch"] and rule.actions.hold is True
    assert "{on_phone.duration_s:.0f}" in rule.message
    assert loaded.source.line == 1


def test_a_file_may_hold_a_list_of_rules_and_any_none_nesting_tags_priority():
    text = """\
    - rule: a
      version: 2
      severity: low
      enabled: false
      tags: [trial, night]
      priority: 5
      when:
        any:
          - event: on_phone
            where: {duration_s: {gt: 10}, track_id: null}
          - all:
              - event: gaze_away
                where: {count: {in: [3, 4, 5]}}
              - any:
                  - event: withdrawal
                    where: {status: {not_in: [declined]}, account_ref: {matches: '^acct-'}}
                  - event: deposit
        none:
          - event: transfer
            where: {amount: {gte: 1000}}
        within: 90s
    - rule: b
      version: 1
      severity: medium
      mode: shadow
      when:
        all: [{event: present}]
    """
    loaded = load_rule_text(textwrap.dedent(text))
    a, b = (x.rule for x in loaded)
    assert not a.enabled and a.tags == ["trial", "night"] and a.priority == 5 and a.when.within == 90
    assert isinstance(a.when.members[1], Group) and isinstance(a.when.members[0], Pattern)
    assert [p.event for p in a.patterns()] == ["on_phone", "gaze_away", "withdrawal", "deposit"]
    assert a.when.none and a.when.none[0].event == "transfer"
    assert b.mode == "shadow" and b.cooldown == 0 and loaded[1].source.line == 22


def test_durations_in_ms_s_m_h_d_and_bare_seconds():
    for text, seconds in [("500ms", 0.5), ("90s", 90), ("5m", 300), ("1h", 3600), ("2d", 172800), ("45", 45)]:
        [loaded] = load_rule_text(f"rule: r\nversion: 1\nseverity: low\nwhen: {{all: [{{event: present}}], within: {text}}}\n")
        assert loaded.rule.when.within == seconds


def test_references_and_two_patterns_of_the_same_event():
    text = rule_with("""
        - event: transfer
          as: first_transfer
        - event: on_phone
          where: {ts: {gte: first_transfer.ts}}
        - event: transfer
          as: second_transfer
          where: {amount: {gt: first_transfer.amount}, payee_ref: first_transfer.payee_ref}
    """, message='"{second_transfer.amount} after {first_transfer.amount:,.0f}"')
    [loaded] = load_rule_text(text)
    assert [p.name for p in loaded.rule.patterns()] == ["first_transfer", "on_phone", "second_transfer"]


def test_load_rules_reads_folders_recursively_skips_tests_and_hidden(tmp_path: Path):
    write(tmp_path, "a.yaml", "rule: a\nversion: 1\nseverity: low\nwhen: {all: [{event: present}]}\n")
    write(tmp_path, "sub/b.yml", "rule: b\nversion: 1\nseverity: low\nwhen: {all: [{event: present}]}\n")
    write(tmp_path, "a.test.yaml", "- {name: x, events: [], expect: []}\n")
    write(tmp_path, ".hidden/c.yaml", "not: a rule\n")
    write(tmp_path, "notes.txt", "ignored\n")
    ruleset = load_rules([tmp_path])
    assert isinstance(ruleset, RuleSet)
    assert [r.rule for r in ruleset.rules] == ["a", "b"]
    assert ruleset.sources["b"].path.endswith("b.yml")


def test_digest_changes_with_any_rule_change_and_only_then(tmp_path: Path):
    path = write(tmp_path, "a.yaml", "rule: a\nversion: 1\nseverity: low\nwhen: {all: [{event: present}]}\n")
    first = load_rules([tmp_path]).digest
    assert load_rules([tmp_path]).digest == first
    path.write_text("# a comment changes nothing\nrule: a\nversion: 1\nseverity: low\nwhen: {all: [{event: present}]}\n")
    assert load_rules([tmp_path]).digest == first
    path.write_text("rule: a\nversion: 1\nseverity: low\nenabled: false\nwhen: {all: [{event: present}]}\n")
    changed = load_rules([tmp_path])
    assert changed.digest != first and changed.enabled == []


# --------------------------------------------------------------------------- errors, each with its position


@pytest.mark.parametrize(
    ("members", "expected"),
    [
        ("- event: on_fone", "6:14: unknown event 'on_fone' (did you mean 'on_phone'?)"),
        ("- event: on_phone\n  where: {duraton_s: {gte: 60}}", "7:15: unknown field 'duraton_s' for on_phone events (did you mean 'duration_s'?)"),
        ("- event: transfer\n  where: {amount: {neq: 5}}", "7:24: unknown operator 'neq'; write `ne`"),
        ("- event: transfer\n  where: {amount: {$ne: 5}}", "7:24: unknown operator '$ne'; write `ne`"),
        ("- event: transfer\n  where: {amount: {greater: 5}}", "7:24: unknown operator 'greater'; write `gt`"),
        ("- event: transfer\n  where: {amount: {'>=': 5}}", "7:24: unknown operator '>='; write `gte`"),
        ("- event: transfer\n  where: {amount: {gte: '300000'}}", "7:29: amount is a number, not '300000'; write 300000 without quotes"),
        ("- event: transfer\n  where: {amount: {gte: true}}", "7:29: amount is a number, not true"),
        ("- event: transfer\n  where: {currency: kzt}", "7:25: 'kzt' can never match currency"),
        ("- event: transfer\n  where: {status: complete}", "7:23: status is one of initiated, completed, declined, not 'complete' (did you mean 'completed'?)"),
        ("- event: transfer\n  where: {payee_new: 'yes'}", "7:26: payee_new is true or false, not 'yes'"),
        ("- event: transfer\n  where: {payee_ref: 17}", "7:26: payee_ref is text; write 17 in quotes"),
        ("- event: transfer\n  where: {payee_ref: {gt: a}}", "7:31: `gt` compares numbers, and payee_ref is text"),
        ("- event: transfer\n  where: {status: [completed]}", "7:23: a list needs an operator: write `status: {in: [...]}`"),
        ("- event: transfer\n  where: {amount: {in: []}}", "7:28: `in` needs at least one value"),
        ("- event: transfer\n  where: {amount: null}", "7:23: amount is always present, so `null` (absent) never matches"),
        ("- event: transfer\n  where: {ts: '2026-02-12T10:00:00+05:00'}", "7:19: ts is a time: compare it with another pattern's time"),
        ("- event: transfer\n  where: {payee_ref: {matches: 'KZ[0-9'}}", "7:36: invalid regular expression 'KZ[0-9': unterminated character set"),
        ("- event: transfer\n  where: {payee_ref: {matches: '(?=a)b'}}", "7:36: regular expression '(?=a)b' cannot run in the rule engine: look-ahead"),
        ("- event: transfer\n  where: {amount: {matches: '1'}}", "7:33: `matches` works on text, and amount is a number"),
        ("- event: transfer\n  where: {amount: {gt: later.amount}}\n- event: transfer\n  as: later",
         "7:28: 'later.amount' refers to alias 'later' before it is defined; a pattern can only refer to patterns above it"),
        ("- event: transfer\n  as: first\n- event: transfer\n  as: second\n  where: {amount: {gt: frist.amount}}",
         "10:28: 'frist.amount' refers to an unknown alias 'frist' (did you mean 'first'?); names defined above: first"),
        ("- event: transfer\n  as: first\n- event: transfer\n  as: second\n  where: {amount: {gt: first.amont}}",
         "10:28: unknown field 'amont' in 'first.amont': 'first' is a transfer event (did you mean 'amount'?)"),
        ("- event: on_phone\n- event: transfer\n  where: {amount: {gt: on_phone.duration_s}, payee_ref: on_phone.ts}",
         "8:61: payee_ref is text but on_phone.ts is a time; they cannot be compared"),
        ("- event: transfer\n- event: transfer", "7:14: two patterns are both named 'transfer'; give this one its own name with `as:`"),
        ("- event: transfer\n  as: atm_id", "7:11: 'atm_id' is reserved for the message"),
        ("- event: transfer\n  as: 2nd", "7:11: '2nd' is not a usable name"),
        ("- {evnt: transfer}", "6:7: each item under `all:` is a pattern (`- event: on_phone`) or a nested group"),
        ("- event: transfer\n  were: {amount: 1}", "7:7: unknown key `were` (did you mean 'where'?); allowed here: event, as, where"),
        ("- any: []", "6:12: `any:` needs a list of at least one pattern"),
    ],
)
def test_each_error_names_line_column_and_what_is_wrong(members: str, expected: str):
    errors = errors_of(rule_with(members))
    assert any(e.startswith(expected) for e in errors), errors


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rule: r\nversion: 1\nseverity: low\nwhen: {all: [{event: present}], within: 5 minutes}\n",
         "4:41: within: '5 minutes' is not a duration; write it like 90s, 5m or 1h"),
        ("rule: r\nversion: 1\nseverity: low\ncooldown: 10 mins\nwhen: {all: [{event: present}]}\n",
         "4:11: cooldown: '10 mins' is not a duration"),
        ("rule: r\nversion: 1\nseverity: low\nwhen: {all: [{event: present}], within: 0s}\n", "4:41: `within:` must be longer than 0s"),
        ("rule: r\nversion: 1\nseverity: urgent\nwhen: {all: [{event: present}]}\n",
         "3:11: severity must be low, medium, high or critical, not 'urgent'"),
        ("rule: Coached Transfer\nversion: 1\nseverity: low\nwhen: {all: [{event: present}]}\n",
         "1:7: rule names use lower-case letters, digits, - and _"),
        ("rule: r\nversion: one\nseverity: low\nwhen: {all: [{event: present}]}\n", "2:10: version must be a whole number"),
        ("rule: r\nversion: 1\nseverity: low\nwhen: {all: [{event: present}]}\ncolour: red\n",
         "5:1: unknown key `colour`; allowed here: rule, version"),
        ("rule: r\nversion: 1\nseverity: low\nwhen: {all: [{event: present}]}\nactions: {sms: patrol}\n", "5:16: sms must be a list"),
        ("rule: r\nversion: 1\nwhen: {all: [{event: present}]}\n", "1:1: `severity:` is missing"),
        ("rule: r\nversion: 1\nseverity: low\nwhen: {all: [{event: present}], any: [{event: present}]}\n",
         "4:7: a group needs exactly one of `all:` or `any:`"),
        ("rule: r\nversion: 1\nseverity: low\nwhen: {all: [{event: on_phone}], by: payee_ref}\n",
         "4:38: on_phone events have no field 'payee_ref', so they cannot be grouped by it"),
        ("rule: r\nversion: 1\nseverity: low\nwhen:\n  all: [{event: present}]\n  none: [{event: transfer, as: t}]\n",
         "6:28: a `none:` pattern cannot have a name"),
        ("rule: r\nversion: 1\nseverity: low\nwhen: {all: [{event: present}]}\nmessage: '{atm_id} {frist.amount}'\n",
         "5:10: `{frist.amount}` in the message: unknown alias 'frist'"),
        ("rule: r\nversion: 1\nseverity: low\nwhen: {all: [{event: transfer, as: t}]}\nmessage: '{t.amout}'\n",
         "5:10: `{t.amout}` in the message: unknown field 'amout' for transfer events (did you mean 'amount'?)"),
        ("rule: r\nversion: 1\nseverity: low\nwhen: {all: [{event: transfer, as: t}]}\nmessage: '{t.currency:.0f}'\n",
         "5:10: `{t.currency:.0f}` in the message: format '.0f' does not fit text"),
        ("rule: r\nversion: 1\nseverity: low\nwhen: {all: [{event: present}]}\nmessage: 'at {atm_id'\n",
         "5:10: the message is not a valid template"),
        ("rule: r\nversion: 1\nseverity: low\nwhen: {all: [{event: present}]\n", "5:1: not valid YAML"),
        ("rule: r\nrule: s\nversion: 1\nseverity: low\nwhen: {all: [{event: present}]}\n", "2:1: not valid YAML: this key appears twice"),
        ("", "1:1: the file is empty"),
        ("- rule: r\n  version: 1\n  severity: low\n  when: {all: [{event: present}]}\n- name: a case\n  events: []\n  expect: []\n",
         "5:3: this looks like a rule test, not a rule: name the file *.test.yaml"),
    ],
)
def test_rule_level_errors(text: str, expected: str):
    errors = errors_of(text)
    assert any(e.startswith(expected) for e in errors), errors


def test_each_error_carries_its_place_in_the_file_and_the_document():
    text = "- rule: r\n  version: 1\n  severity: low\n  when: {all: [{event: transfer, where: {amount: {greater: 1}}}]}\n"
    with pytest.raises(RuleSetError) as info:
        load_rule_text(text, "r.yaml")
    [err] = info.value.errors
    # the key path is data for tools; the printed form stays path:line:col: message
    assert err.position == Position("r.yaml", 4, 51, "[0].when.all[0].where.amount.greater")
    assert str(err).startswith("r.yaml:4:51: unknown operator 'greater'; write `gt`")


def test_all_errors_of_a_file_at_once_in_line_order():
    text = """\
    rule: r
    version: 0
    severity: urgent
    when:
      all:
        - event: on_fone
        - event: transfer
          where: {amount: {neq: 1}, currency: kzt}
      within: soon
    message: "{nobody}"
    """
    errors = errors_of(text)
    assert [e.split(":")[0] for e in errors] == ["2", "3", "6", "8", "8", "9", "10"]


def test_duplicate_rule_names_across_files(tmp_path: Path):
    write(tmp_path, "a.yaml", "rule: same\nversion: 1\nseverity: low\nwhen: {all: [{event: present}]}\n")
    write(tmp_path, "b.yaml", "# second\nrule: same\nversion: 1\nseverity: low\nwhen: {all: [{event: present}]}\n")
    with pytest.raises(RuleSetError) as info:
        load_rules([tmp_path])
    [err] = info.value.errors
    assert err.path.endswith("b.yaml") and (err.line, err.column) == (2, 1)
    assert f"rule name 'same' is already used at {tmp_path / 'a.yaml'}:1:1" in err.message


def test_errors_of_several_files_are_all_reported(tmp_path: Path):
    write(tmp_path, "a.yaml", "rule: a\nversion: 1\nseverity: low\nwhen: {all: [{event: nope}]}\n")
    write(tmp_path, "b.yaml", "rule: b\nversion: 1\nseverity: low\nwhen: {all: [{event: present, where: {x: 1}}]}\n")
    with pytest.raises(RuleSetError) as info:
        load_rules([tmp_path])
    assert sorted(Path(e.path).name for e in info.value.errors) == ["a.yaml", "b.yaml"]
