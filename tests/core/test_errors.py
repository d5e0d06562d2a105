"""One error shape: every error that points into a file carries a Position and prints it one way."""

from __future__ import annotations

import pickle

import pytest

from atmguard.core.errors import (
    ConfigError,
    EventError,
    Position,
    PositionedError,
    RuleError,
    RuleSetError,
    key_path,
)


@pytest.mark.parametrize(
    ("error", "text"),
    [
        (RuleError("unknown event 'withdrawl'", "rules/n.yaml", 8, 14), "rules/n.yaml:8:14: unknown event 'withdrawl'"),
        (ConfigError("not E.164", position=Position("configs/deployment.yaml", 31, None, "people.x.phone")),
         "configs/deployment.yaml:31: people.x.phone: not E.164"),
        (ConfigError("bad", position=Position("c.yaml", 4, 7, "atms[2].phone")), "c.yaml:4:7: atms[2].phone: bad"),
        (ConfigError("Twilio credentials missing", field="twilio_auth_token"), "twilio_auth_token: Twilio credentials missing"),
        (ConfigError("no cameras.yaml here", path="configs/cameras.yaml"), "configs/cameras.yaml: no cameras.yaml here"),
        (EventError("Input should be a valid number", "facts.jsonl", 7, "confidence"),
         "facts.jsonl:7: field 'confidence': Input should be a valid number"),
        (EventError("not valid JSON: EOF", source="bad.jsonl", line=2), "bad.jsonl:2: not valid JSON: EOF"),
        (EventError("currency: bad"), "currency: bad"),
    ],
)
def test_one_string_form_path_line_col_subject_message(error: PositionedError, text: str) -> None:
    assert str(error) == text


def test_a_rule_error_names_its_key_path_in_words_not_in_the_prefix() -> None:
    err = RuleError("unknown operator 'greater'", position=Position("r.yaml", 7, 28, "when.all[0].where.amount.greater"))
    assert str(err) == "r.yaml:7:28: unknown operator 'greater'"
    assert err.position.key_path == "when.all[0].where.amount.greater"


def test_the_old_constructor_arguments_fill_the_position() -> None:
    rule = RuleError("m", "r.yaml", 3, 5)
    assert rule.position == Position("r.yaml", 3, 5) and (rule.path, rule.line, rule.column) == ("r.yaml", 3, 5)
    event = EventError("m", source="f.jsonl", line=9, field="ts")
    assert event.position == Position("f.jsonl", 9, None, "ts")
    assert (event.source, event.line, event.field, event.message) == ("f.jsonl", 9, "ts", "m")
    config = ConfigError("m", "d.yaml", "sms.from")
    assert config.position == Position("d.yaml", None, None, "sms.from") and config.field == "sms.from"


def test_an_unknown_position_is_left_out_but_a_rule_error_keeps_its_form() -> None:
    assert str(Position()) == "" and str(Position("a.yaml", None, 3)) == "a.yaml"  # no column without a line
    assert str(ConfigError("something is wrong")) == "something is wrong"
    assert ConfigError("x").position == Position()
    # the rule checker always prints path:line:col (README), the top of the file when it knows no better
    assert str(RuleError("the file is empty", position=Position("r.yaml"))) == "r.yaml:1:1: the file is empty"
    assert str(RuleError("no position")) == "<rules>:1:1: no position"


def test_key_paths_read_as_written() -> None:
    assert key_path(("atms", 2, "phone")) == "atms[2].phone"
    assert key_path((0, "when", "all", 1)) == "[0].when.all[1]"
    assert key_path(("groups", "patrol", "districts", "north", "day", 0)) == "groups.patrol.districts.north.day[0]"
    assert key_path(()) == ""


def test_errors_survive_pickling_with_their_position() -> None:
    # an exception is rebuilt from its args when it crosses a process (e.g. a spawned worker's result)
    for err in (RuleError("m", "r.yaml", 2, 3), EventError("m", "f.jsonl", 4, "ts"),
                ConfigError("m", position=Position("d.yaml", 5, None, "atms[0].id"))):
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is type(err) and back.position == err.position and str(back) == str(err)


def test_a_rule_set_error_lists_each_error_on_its_line() -> None:
    errors = [RuleError("a", "x.yaml", 1, 2), RuleError("b", "y.yaml", 3, 4)]
    assert str(RuleSetError(errors)) == "x.yaml:1:2: a\ny.yaml:3:4: b"
