"""Rule -> durable_rules JSON: operator mapping, guards, windows, joins, expansion, refusals."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from atmguard.core.errors import RuleError
from atmguard.rules.compiler import check_rule, compile_rules, translate_regex
from atmguard.rules.schema import Rule
from tests.rules.test_runtime import COACHED, SECOND, rule


def conds(r: Rule, branch: int = 0) -> list[dict[str, Any]]:
    group = compile_rules([r]).groups[r.when.by]
    return list(group.definition.values())[branch]["all"]


def flat(entry: dict[str, Any]) -> list[dict[str, Any]]:
    (value,) = entry.values()
    return list(value.get("$and", [value]))


def make(where: dict[str, Any], event: str = "transfer") -> Rule:
    return Rule.model_validate({"rule": "r", "version": 1, "severity": "low",
                                "when": {"all": [{"event": event, "where": where}]}})


def test_contract_rule_compiles_to_joined_windowed_facts() -> None:
    c = conds(rule(COACHED))
    assert [next(iter(e)) for e in c] == ["p0", "p1", "p2"]
    p0, p1, p2 = (flat(e) for e in c)
    assert p0 == [{"_e": "on_phone"}, {"$gte": {"duration_s": 60}}, {"$gte": {"confidence": 0.6}}]
    assert {"_k": {"p0": "_k"}} in p1 and {"_k": {"p0": "_k"}} in p2  # correlation by key
    assert {"currency": "KZT"} in p2 and {"payee_new": True} in p2
    # within 5m: pairwise event-time arithmetic against every earlier pattern, never timers
    for other in ("p0", "p1"):
        assert {"$lte": {"_t": {"$add": {"$l": {other: "_t"}, "$r": 300.0}}}} in p2
        assert {"$gte": {"_t": {"$sub": {"$l": {other: "_t"}, "$r": 300.0}}}} in p2
    cr = compile_rules([rule(COACHED)])
    assert cr.horizon == 300.0 and cr.max_cooldown == 600.0
    assert cr.groups["atm_id"].fields == {"duration_s", "confidence", "count", "amount", "currency", "payee_new"}


def test_operator_mapping() -> None:
    def one(op: str, value: Any, fname: str = "currency") -> list[dict[str, Any]]:
        return flat(conds(make({fname: {op: value}}))[0])[1:]

    assert one("ne", "KZT") == [{"$neq": {"currency": "KZT"}}]  # never $ne (silently never matches)
    assert one("eq", "KZT") == [{"currency": "KZT"}] == flat(conds(make({"currency": "KZT"}))[0])[1:]
    assert one("gt", 5, "amount") == [{"$gt": {"amount": 5}}]
    assert one("lte", 5, "amount") == [{"$lte": {"amount": 5}}]
    (expr,) = conds(make({"currency": {"in": ["KZT", "USD"]}}))[0].values()
    assert expr == {"$or": [{"$and": [{"_e": "transfer"}, {"currency": "KZT"}]},
                            {"$and": [{"_e": "transfer"}, {"currency": "USD"}]}]}
    assert one("in", ["KZT"]) == [{"currency": "KZT"}]
    assert one("not_in", ["KZT", "USD"]) == [
        {"$ex": {"currency": 1}}, {"$neq": {"currency": "KZT"}}, {"$neq": {"currency": "USD"}}
    ]
    assert one("matches", "^K.T$") == [{"$mt": {"currency": "K.T"}}]
    assert one("matches", "(?i)kz") == [{"$imt": {"currency": ".*(kz).*"}}]
    assert one("eq", None, "payee_ref") == [{"$nex": {"payee_ref": 1}}]
    assert one("ne", None, "payee_ref") == [{"$ex": {"payee_ref": 1}}]
    assert flat(conds(make({"id": "x"}))[0])[1:] == [{"x_id": "x"}]  # durable reserves `id`


def test_references_are_guarded_against_error_311() -> None:
    p0, p1, p2 = (flat(e) for e in conds(rule(SECOND)))
    assert {"$ex": {"amount": 1}} in p1  # the referenced field must exist on the referenced event
    assert {"$ex": {"amount": 1}} in p2 and {"$gt": {"amount": {"p1": "amount"}}} in p2
    assert {"$neq": {"_i": {"p1": "_i"}}} in p2  # two transfers are two different events


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ({"amount": {"ne_": 1}}, "unknown operator 'ne_'"),
        ({"amount": {"$ne": 1}}, "unknown operator"),
        ({"payee_ref": {"matches": "(?=a)b"}}, "look-ahead"),
        ({"payee_ref": {"matches": "(a)\\1"}}, "back-references"),
        ({"payee_ref": {"matches": "a(b"}}, "not a valid regular expression"),
        ({"payee_ref": {"matches": "a^b"}}, "only supported at the very start"),
        ({"currency": {"in": []}}, "at least one value"),
        ({"amount": {"gt": True}}, "true/false"),
        ({"amount": {"lt": None}}, "cannot compare with null"),
        ({"amount": {"matches": 5}}, "regular expression in quotes"),
    ],
)
def test_refusals_are_rule_errors(where: dict[str, Any], message: str) -> None:
    r = make(where)
    with pytest.raises(RuleError, match=re.escape(message)):
        compile_rules([r])
    assert any(message in m for m in check_rule(r))


def test_any_expands_and_drops_cases_that_cannot_match() -> None:
    r = Rule.model_validate({
        "rule": "r", "version": 1, "severity": "low",
        "when": {"all": [
            {"any": [{"event": "transfer", "as": "t"}, {"event": "withdrawal", "as": "w"}]},
            {"event": "deposit", "where": {"amount": {"gt": "t.amount"}}},
        ], "none": [{"event": "on_phone"}]},
    })
    cr = compile_rules([r])
    (crule,) = cr.rules
    # (transfer, deposit) only: the withdrawal case cannot satisfy a reference to `t`
    assert [[p.name for p in b.patterns] for b in crule.branches] == [["t", "deposit"]]
    entries = crule.branches[0].durable["all"]
    assert list(entries[-1]) == ["n0$not"] and {"_e": "on_phone"} in flat(entries[-1])
    assert {"_k": {"p0": "_k"}} in flat(entries[-1])


def test_disabled_rules_are_not_compiled_and_duplicates_refused() -> None:
    off = rule(COACHED, enabled=False)
    assert compile_rules([off]).rules == []
    with pytest.raises(RuleError, match="defined twice"):
        compile_rules([rule(COACHED), rule(COACHED)])


def test_definition_is_stable_json() -> None:
    a = compile_rules([rule(COACHED)]).groups["atm_id"].definition_json
    b = compile_rules([rule(COACHED, version=7, message="other")]).groups["atm_id"].definition_json
    assert a == b and json.loads(a)  # metadata changes do not change what durable runs


@pytest.mark.parametrize(
    ("pattern", "durable"),
    [("K.T", ".*(K.T).*"), ("^acc-\\d{3}$", "acc-[%d]{3,3}"), ("a\\.b", ".*(a%.b).*"), ("x{2,}", ".*(x{2}x*).*"),
     ("[^-a]", ".*([^a-]).*"), ("(ab)+$", ".*((ab)+)")],
)
def test_regex_translation(pattern: str, durable: str) -> None:
    assert translate_regex(pattern) == (durable, False)


def test_in_becomes_or_of_complete_ands_in_joined_patterns() -> None:
    r = Rule.model_validate({
        "rule": "r", "version": 1, "severity": "low",
        "when": {"within": "5m", "all": [
            {"event": "transfer", "as": "a"},
            {"event": "transfer", "where": {"status": {"in": ["initiated", "completed"]}, "bank_id": {"in": ["x", "y"]}}},
        ]},
    })
    (p1,) = conds(r)[1].values()
    assert list(p1) == ["$or"] and len(p1["$or"]) == 4
    for alt in p1["$or"]:
        body = alt["$and"]
        assert {"_k": {"p0": "_k"}} in body and any("$lte" in c for c in body)  # join and window in every case
        assert not any("$or" in c for c in body)
