"""One YAML loader and one position helper for every hand-edited file."""

from __future__ import annotations

import pytest

from atmguard.core import yamlpos
from atmguard.core.errors import ConfigError, Position, RuleError

TEXT = """\
# a deployment-like file: a list of mappings, a value below its key, a flow list
atms:
  - id: a1
    phone: "+7 1"
  - id: a2
    phone:
      "+7 2"
    members: [x, y, z]
sms:
  max: 3
seen: 2026-02-10T14:03:00+05:00
"""


@pytest.fixture
def tree() -> object:
    return yamlpos.load_yaml(TEXT, "d.yaml")


def test_a_value_in_a_nested_list_at_the_value_and_at_its_key(tree: object) -> None:
    assert yamlpos.locate(tree, ("atms", 1, "phone"), path="d.yaml") == Position("d.yaml", 7, 7, "atms[1].phone")
    assert yamlpos.locate(tree, ("atms", 1, "phone"), path="d.yaml", at_key=True) == Position("d.yaml", 6, 5, "atms[1].phone")
    assert yamlpos.locate(tree, ("atms", 1, "members", 2)) == Position(None, 8, 21, "atms[1].members[2]")
    assert yamlpos.position(tree, ("atms", 1, "phone")) == (7, 7)


def test_a_missing_key_points_where_it_has_to_be_added(tree: object) -> None:
    # under a list item: the item; under a mapping: its first entry, or with at_key the key that holds it
    assert yamlpos.locate(tree, ("atms", 0, "email")) == Position(None, 3, 5, "atms[0].email")
    assert yamlpos.locate(tree, ("sms", "from")) == Position(None, 10, 3, "sms.from")
    assert yamlpos.locate(tree, ("sms", "from"), at_key=True) == Position(None, 9, 1, "sms.from")


def test_a_path_that_reaches_no_key_has_no_line_at_the_key(tree: object) -> None:
    assert yamlpos.locate(tree, ("timezone",), path="d.yaml", at_key=True) == Position("d.yaml", None, None, "timezone")
    assert yamlpos.locate(tree, ("timezone",)) == Position(None, 2, 1, "timezone")  # the document starts there
    assert yamlpos.position(tree, ("timezone",), at_key=True) == (2, 1)  # callers that need a place get the start


def test_without_columns_for_files_whose_messages_name_the_line(tree: object) -> None:
    assert yamlpos.locate(tree, ("atms", 1, "phone"), at_key=True, column=False) == Position(None, 6, None, "atms[1].phone")


def test_a_syntax_error_is_raised_as_the_callers_error_at_its_mark() -> None:
    with pytest.raises(RuleError) as rule:
        yamlpos.load_yaml("a: 1\nb: [1, 2\n", "r.yaml")
    assert (rule.value.line, rule.value.column) == (3, 1) and str(rule.value).startswith("r.yaml:3:1: not valid YAML: ")
    with pytest.raises(ConfigError) as config:
        yamlpos.load_yaml("a: 1\nb: [1, 2\n", "d.yaml", error=ConfigError, column=False)
    assert config.value.position == Position("d.yaml", 3) and str(config.value).startswith("d.yaml:3: not valid YAML: ")


def test_duplicate_keys_and_unmarked_errors() -> None:
    with pytest.raises(RuleError, match="this key appears twice in the same mapping") as dup:
        yamlpos.load_yaml("a: 1\na: 2\n", "r.yaml")
    assert (dup.value.line, dup.value.column) == (2, 1)
    # a control character has no mark: the rule form says 1:1, a config error says no line
    with pytest.raises(RuleError) as rule:
        yamlpos.load_yaml("a: \x07\n", "r.yaml")
    assert str(rule.value).startswith("r.yaml:1:1: not valid YAML: unacceptable character")
    with pytest.raises(ConfigError) as config:
        yamlpos.load_yaml("a: \x07\n", "d.yaml", error=ConfigError)
    assert config.value.position == Position("d.yaml") and str(config.value).startswith("d.yaml: not valid YAML:")


def test_plain_data_keeps_timestamps_as_written(tree: object) -> None:
    data = yamlpos.plain(tree)
    assert data["seen"] == "2026-02-10T14:03:00+05:00" and type(data["sms"]["max"]) is int
    assert data["atms"][1] == {"id": "a2", "phone": "+7 2", "members": ["x", "y", "z"]}
    assert yamlpos.get(tree, ("atms", 1, "members", 2)) == "z" and yamlpos.get(tree, ("atms", 5)) is None
