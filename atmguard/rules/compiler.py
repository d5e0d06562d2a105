"""Validated rules -> durable_rules JSON rulesets (plain data; this module never imports durable).

How the rule language maps onto durable_rules, and why:

- Every event enters durable as a *fact* (never an *event*): durable consumes events when a rule
  fires, which would hide them from other rules and from later firings of the same rule. Facts stay
  until the runtime retracts them (supersede, sweep), so rules are independent.
- A durable message carries only what the rules test: `id` (a collision-free internal id), `sid`
  (a shard), `_i` (a copy of `id` that durable can compare), `_e` (event name), `_k` (the value of the rule's `by` field), `_t` (event time as epoch
  seconds) and the fields named in conditions (`id` of the event becomes `x_id`).
- Keys are sharded over at most 1024 sids (durable's limit), so every later pattern joins the first on
  `_k`; `within` becomes pairwise `_t` arithmetic between patterns (event time, never wall-clock).
- `any:` and nesting are expanded into flat `all` branches (one durable rule each); `none:` patterns
  become durable `$not` patterns joined on the key and bounded by the same window.
- Operators are whitelisted and mapped by hand: `ne` -> `$neq` (durable silently accepts `$ne` and
  never matches), `in`/`not_in` -> `$or`/`$and` chains, `matches` -> `$mt`/`$imt` after translating a
  Python regex into durable's dialect (escapes are `%`, full match only). A field used in a reference
  is guarded with `$ex` on both sides (a missing one is durable's error 311, which poisons a session).
- A condition on a field the event does not carry never matches; `field: null` means "absent".
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from atmguard.core.errors import RuleError
from atmguard.rules.schema import OPERATORS, REFERENCE_RE, Group, Pattern, Rule

MAX_BRANCHES = 64
"""`any:` groups expand into branches; more than this means the rule should be split."""

DEFAULT_HORIZON_S = 600.0
"""How long events are kept for rules without `within` (and when no rule has one)."""

RESERVED_FIELDS = {"id": "x_id", "sid": "x_sid", "ts": "_t"}
"""Event fields whose names durable reserves (or that every message carries already: `ts` is `_t`,
epoch seconds), and the names they take inside durable messages."""

ALWAYS_SENT = frozenset({"ts"})


def durable_field(name: str) -> str:
    """The key an event field has inside a durable message."""
    return RESERVED_FIELDS.get(name, name)


@dataclass(frozen=True)
class CompiledPattern:
    """One positive pattern of a branch: how evidence and the message refer to it."""

    name: str
    event: str


@dataclass(frozen=True)
class Branch:
    """One flat conjunction of a rule (a rule without `any:` has exactly one)."""

    rule_index: int
    durable_name: str
    patterns: tuple[CompiledPattern, ...]
    durable: dict[str, Any]


@dataclass(frozen=True)
class CompiledRule:
    """A rule and its branches, with the durations in seconds."""

    rule: Rule
    index: int
    by: str
    within: float | None
    cooldown: float
    branches: tuple[Branch, ...]


@dataclass
class CompiledGroup:
    """All rules correlated by the same `by` field: one durable ruleset."""

    by: str
    rules: list[CompiledRule]
    fields: frozenset[str]
    definition: dict[str, Any] = field(default_factory=dict)
    branches: dict[str, tuple[CompiledRule, Branch]] = field(default_factory=dict)
    events: frozenset[str] = frozenset()
    fields_by_event: dict[str, frozenset[str]] = field(default_factory=dict)

    @property
    def definition_json(self) -> str:
        """The durable ruleset as canonical JSON (same text -> same durable ruleset)."""
        return json.dumps(self.definition, sort_keys=True, ensure_ascii=False)


@dataclass
class CompiledRuleSet:
    """Every enabled rule compiled, grouped by correlation field."""

    rules: list[CompiledRule]
    groups: dict[str, CompiledGroup]
    horizon: float
    max_cooldown: float
    digest: str

    def group_digest(self, by: str) -> str:
        """Short hash of one group's durable definition (names durable rulesets)."""
        return hashlib.sha256(self.groups[by].definition_json.encode()).hexdigest()[:12]


# --------------------------------------------------------------------------- regex translation

_DURABLE_SPECIAL = set(".|?*+()[]{}%")
_CATEGORY = {
    "CATEGORY_DIGIT": "%d",
    "CATEGORY_SPACE": "%s",
    "CATEGORY_WORD": "%w_",
}


def _literal(code: int, in_class: bool = False) -> str:
    ch = chr(code)
    if ch in _DURABLE_SPECIAL or (in_class and ch in "]^-"):
        if ch in "^-" and in_class:
            # durable has no escape for these inside a class; place them where they are literal.
            return ch
        return "%" + ch
    if code < 0x20:
        raise ValueError(f"control character {ch!r} is not supported")
    return ch


def translate_regex(pattern: str) -> tuple[str, bool]:
    """A Python regex (search semantics, as analysts expect) -> (durable regex, case-insensitive).

    durable's `$mt` matches the whole value, escapes with `%`, and silently accepts what it does not
    understand (`\\d`, `^`, `(?:`) so that it never matches; this translation refuses anything it
    cannot express and raises ValueError with the reason.
    """
    import re._constants as sre_constants
    import re._parser as sre_parse

    try:
        parsed = sre_parse.parse(pattern)
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc}") from None
    flags = parsed.state.flags
    ignore_case = bool(flags & re.IGNORECASE)
    if flags & ~(re.IGNORECASE | re.UNICODE):
        raise ValueError("only the (?i) flag is supported")
    items = list(parsed)
    anchored_start = bool(items) and items[0][0] == sre_constants.AT and str(items[0][1]) == "AT_BEGINNING"
    anchored_end = bool(items) and items[-1][0] == sre_constants.AT and str(items[-1][1]) in ("AT_END", "AT_END_STRING")
    if anchored_start:
        items = items[1:]
    if anchored_end:
        items = items[:-1]

    def seq(nodes: Iterable[tuple[Any, Any]]) -> str:
        return "".join(node(op, av) for op, av in nodes)

    def klass(av: list[tuple[Any, Any]]) -> str:
        negate = caret = dash = False
        parts: list[str] = []
        for op, value in av:
            name = str(op)
            if name == "NEGATE":
                negate = True
            elif name == "LITERAL" and chr(value) in "^-":
                caret, dash = caret or chr(value) == "^", dash or chr(value) == "-"
            elif name == "LITERAL":
                parts.append(_literal(value, in_class=True))
            elif name == "RANGE":
                lo, hi = value
                parts.append(f"{_literal(lo, True)}-{_literal(hi, True)}")
            elif name == "CATEGORY" and str(value) in _CATEGORY:
                parts.append(_CATEGORY[str(value)])
            else:
                raise ValueError(f"{name.lower()} inside [...] is not supported")
        # `^` is literal anywhere but first, `-` literal when last: durable has no escape for them.
        body = "".join(parts) + ("^" if caret else "") + ("-" if dash else "")
        if not parts and caret:
            raise ValueError("a class of only ^ is not supported; write \\^")
        return "[" + ("^" if negate else "") + body + "]"

    def atom(sub: Any) -> bool:
        nodes = list(sub)
        return len(nodes) == 1 and str(nodes[0][0]) in ("LITERAL", "NOT_LITERAL", "ANY", "IN", "SUBPATTERN", "BRANCH")

    def node(op: Any, av: Any) -> str:
        name = str(op)
        if name == "LITERAL":
            return _literal(av)
        if name == "NOT_LITERAL":
            return "[^" + _literal(av, in_class=True) + "]"
        if name == "ANY":
            return "."
        if name == "IN":
            if len(av) == 1 and str(av[0][0]) == "CATEGORY":
                cat = str(av[0][1])
                if cat in _CATEGORY:
                    return "[" + _CATEGORY[cat] + "]"
                neg = {"CATEGORY_NOT_DIGIT": "%d", "CATEGORY_NOT_SPACE": "%s", "CATEGORY_NOT_WORD": "%w_"}
                if cat in neg:
                    return "[^" + neg[cat] + "]"
                raise ValueError(f"{cat.lower()} is not supported")
            return klass(av)
        if name == "BRANCH":
            return "(" + "|".join(seq(b) for b in av[1]) + ")"
        if name == "SUBPATTERN":
            _group, add_flags, del_flags, sub = av
            if add_flags or del_flags:
                raise ValueError("inline flags inside groups are not supported")
            return "(" + seq(sub) + ")"
        if name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            lo, hi, sub = av
            inner = seq(sub) if atom(sub) else "(" + seq(sub) + ")"
            maxrepeat = sre_constants.MAXREPEAT
            if (lo, hi) == (0, maxrepeat):
                return inner + "*"
            if (lo, hi) == (1, maxrepeat):
                return inner + "+"
            if (lo, hi) == (0, 1):
                return inner + "?"
            if hi == maxrepeat:
                return inner + "{" + str(lo) + "}" + inner + "*"
            return inner + "{" + str(lo) + "," + str(hi) + "}"
        if name == "AT":
            raise ValueError("^ and $ are only supported at the very start and end")
        if name == "GROUPREF":
            raise ValueError("back-references are not supported")
        if name in ("ASSERT", "ASSERT_NOT"):
            raise ValueError("look-ahead/look-behind is not supported")
        raise ValueError(f"{name.lower()} is not supported")

    body = seq(items)
    if not body:
        raise ValueError("empty pattern")
    if not (anchored_start and anchored_end):
        body = "(" + body + ")"
    if not anchored_start:
        body = ".*" + body
    if not anchored_end:
        body = body + ".*"
    return body, ignore_case


# --------------------------------------------------------------------------- conditions


def _is_reference(value: Any, earlier: dict[str, str]) -> tuple[str, str] | None:
    if not isinstance(value, str):
        return None
    m = REFERENCE_RE.match(value)
    if m and m.group(1) in earlier:
        return m.group(1), m.group(2)
    return None


def _json_scalar(value: Any) -> Any:
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    raise ValueError(f"{value!r} is not a number, text or true/false")


class _OutsideBranch(Exception):
    """A pattern refers to an alias that lives in another `any:` case."""


@dataclass
class _PatternCompiler:
    """Compiles the conditions of one pattern; collects the fields it needs."""

    rule: Rule
    fields: set[tuple[str, str]]  # (event name, field) pairs durable messages must carry
    guards: dict[str, set[str]]
    branch_names: set[str] = field(default_factory=set)
    all_names: set[str] = field(default_factory=set)
    events: dict[str, str] = field(default_factory=dict)  # pattern name -> event name
    alternatives: dict[str, list[list[dict[str, Any]]]] = field(default_factory=dict)  # durable name -> `in:` choices
    current: str = ""

    def where(self, pattern: Pattern, durable_names: dict[str, str]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for fname, cond in pattern.where.items():
            key = durable_field(fname)
            self.fields.add((pattern.event, fname))
            ops: dict[str, Any] = cond if isinstance(cond, dict) else {"eq": cond}
            if not ops:
                raise self.error(f"`{fname}:` has no condition")
            for op, value in ops.items():
                out.extend(self.condition(pattern, fname, key, op, value, durable_names))
        return out

    def error(self, message: str) -> RuleError:
        return RuleError(f"rule {self.rule.rule!r}: {message}")

    def condition(
        self, pattern: Pattern, fname: str, key: str, op: str, value: Any, names: dict[str, str]
    ) -> list[dict[str, Any]]:
        where = f"{pattern.name}.{fname}"
        if op not in OPERATORS:
            raise self.error(f"unknown operator {op!r} in {where}; use one of {', '.join(OPERATORS)}")
        ref = _is_reference(value, names)
        if ref is None and isinstance(value, str) and (m := REFERENCE_RE.match(value)):
            if m.group(1) in self.branch_names:
                raise self.error(f"{where} refers to {m.group(1)!r} before that pattern is defined")
            if m.group(1) in self.all_names and m.group(1) not in self.branch_names:
                raise _OutsideBranch()
        if ref is not None:
            alias, rfield = ref
            if op in ("in", "not_in", "matches"):
                raise self.error(f"{where}: `{op}` cannot take a reference ({value})")
            self.fields.add((self.events[alias], rfield))
            rkey = durable_field(rfield)
            self.guards.setdefault(alias, set()).add(rkey)
            rhs = {names[alias]: rkey}
            own = {"$ex": {key: 1}}
            if op == "eq":
                return [own, {key: rhs}]
            return [own, {"$" + {"ne": "neq"}.get(op, op): {key: rhs}}]
        if op in ("in", "not_in"):
            values = value if isinstance(value, list) else [value]
            if not values:
                raise self.error(f"{where}: `{op}` needs at least one value")
            try:
                vals = [_json_scalar(v) for v in values]
            except ValueError as exc:
                raise self.error(f"{where}: {exc}") from None
            if op == "in":
                alts: list[dict[str, Any]] = [{"$nex": {key: 1}} if v is None else {key: v} for v in vals]
                if len(alts) == 1:
                    return [alts[0]]
                # durable ignores every condition of an `$and` that follows an `$or` in a joined pattern:
                # `in:` becomes a top-level `$or` of complete `$and`s instead (see _pattern_expression)
                self.alternatives.setdefault(self.current, []).append(alts)
                return []
            return [{"$ex": {key: 1}}] + [{"$neq": {key: v}} for v in vals if v is not None]
        if isinstance(value, list):
            raise self.error(f"{where}: `{op}` takes one value, not a list (use `in:`)")
        try:
            scalar = _json_scalar(value)
        except ValueError as exc:
            raise self.error(f"{where}: {exc}") from None
        if op == "matches":
            if not isinstance(scalar, str):
                raise self.error(f"{where}: `matches` needs a regular expression in quotes")
            try:
                regex, ignore_case = translate_regex(scalar)
            except ValueError as exc:
                raise self.error(f"{where}: regular expression {scalar!r}: {exc}") from None
            return [{"$imt" if ignore_case else "$mt": {key: regex}}]
        if scalar is None:
            if op == "eq":
                return [{"$nex": {key: 1}}]
            if op == "ne":
                return [{"$ex": {key: 1}}]
            raise self.error(f"{where}: `{op}` cannot compare with null")
        if op == "eq":
            return [{key: scalar}]
        if isinstance(scalar, bool) and op in ("gt", "gte", "lt", "lte"):
            raise self.error(f"{where}: `{op}` cannot compare with true/false")
        return [{"$" + {"ne": "neq"}.get(op, op): {key: scalar}}]


def _expand(group: Group) -> list[tuple[list[Pattern], list[Pattern]]]:
    """A group as flat branches of (positive patterns, absent patterns), in written order."""
    member_options: list[list[tuple[list[Pattern], list[Pattern]]]] = []
    for member in group.members:
        member_options.append([([member], [])] if isinstance(member, Pattern) else _expand(member))
    branches: list[tuple[list[Pattern], list[Pattern]]] = []
    if group.all is not None:
        for combo in itertools.product(*member_options):
            pos = [p for b in combo for p in b[0]]
            neg = [p for b in combo for p in b[1]]
            branches.append((pos, neg))
            if len(branches) > MAX_BRANCHES:
                break
    else:
        for options in member_options:
            branches.extend(options)
    absent = list(group.none or [])
    return [(pos, neg + absent) for pos, neg in branches]


def _within_conditions(names: Sequence[str], within: float) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for other in names:
        out.append({"$lte": {"_t": {"$add": {"$l": {other: "_t"}, "$r": within}}}})
        out.append({"$gte": {"_t": {"$sub": {"$l": {other: "_t"}, "$r": within}}}})
    return out


def compile_rule(rule: Rule, index: int) -> tuple[CompiledRule, set[tuple[str, str]]]:
    """One rule -> its branches as durable rule definitions, and the (event, field) pairs they test."""
    fields: set[tuple[str, str]] = set()
    within = rule.when.within
    branches: list[Branch] = []
    expanded = _expand(rule.when)
    if len(expanded) > MAX_BRANCHES:
        raise RuleError(f"rule {rule.rule!r}: `any:` groups expand to more than {MAX_BRANCHES} cases; split the rule")
    for bi, (positives, negatives) in enumerate(expanded):
        guards: dict[str, set[str]] = {}
        pc = _PatternCompiler(rule, fields, guards)
        names: dict[str, str] = {}  # pattern name -> durable name
        durable_names: list[str] = []
        entries: list[tuple[str, list[dict[str, Any]]]] = []
        events_by_name: dict[str, list[str]] = {}
        patterns: list[CompiledPattern] = []
        pc.branch_names = {p.name for p in positives}
        pc.all_names = {p.name for p in rule.patterns()}
        try:
            for pi, pattern in enumerate(positives):
                dname = pc.current = f"p{pi}"
                conds: list[dict[str, Any]] = [{"_e": pattern.event}]
                conds += pc.where(pattern, names)
                if durable_names:
                    conds.append({"_k": {durable_names[0]: "_k"}})
                    # two patterns of the same event must be two different events
                    # (`$neq` on durable's own `id` never matches, so compare a copy of it, `_i`)
                    conds += [{"$neq": {"_i": {o: "_i"}}} for o in events_by_name.get(pattern.event, [])]
                    if within is not None:
                        conds += _within_conditions(durable_names, within)
                entries.append((dname, conds))
                names[pattern.name] = dname
                pc.events[pattern.name] = pattern.event
                durable_names.append(dname)
                events_by_name.setdefault(pattern.event, []).append(dname)
                patterns.append(CompiledPattern(pattern.name, pattern.event))
            for ni, pattern in enumerate(negatives):
                pc.current = f"n{ni}$not"
                conds = [{"_e": pattern.event}]
                conds += pc.where(pattern, names)
                conds.append({"_k": {durable_names[0]: "_k"}})
                if within is not None:
                    conds += _within_conditions(durable_names, within)
                entries.append((f"n{ni}$not", conds))
        except _OutsideBranch:
            continue  # refers to an alias of another `any:` case: this combination cannot match
        all_list: list[dict[str, Any]] = []
        for dname, conds in entries:
            guard = [{"$ex": {f: 1}} for f in sorted(guards.get(_name_of(dname, names), set()))]
            conds = conds[:1] + guard + conds[1:]
            all_list.append({dname: _pattern_expression(rule, conds, pc.alternatives.get(dname, []))})
        durable_name = f"r{index}b{bi}"
        branches.append(
            Branch(index, durable_name, tuple(patterns), {"all": all_list})
        )
    if not branches:
        raise RuleError(f"rule {rule.rule!r}: no combination of its `any:` cases can match (references to aliases of other cases)")
    compiled = CompiledRule(
        rule=rule,
        index=index,
        by=rule.when.by,
        within=within,
        cooldown=float(rule.cooldown or 0.0),
        branches=tuple(branches),
    )
    return compiled, fields


def _pattern_expression(rule: Rule, conds: list[dict[str, Any]], choices: list[list[dict[str, Any]]]) -> dict[str, Any]:
    """One pattern's durable expression: an `$and`, or an `$or` of whole `$and`s when `in:` is used."""
    if not choices:
        return conds[0] if len(conds) == 1 else {"$and": conds}
    combos = list(itertools.islice(itertools.product(*choices), MAX_BRANCHES + 1))
    if len(combos) > MAX_BRANCHES:
        raise RuleError(f"rule {rule.rule!r}: the `in:` lists of one pattern combine into more than {MAX_BRANCHES} cases")
    return {"$or": [{"$and": conds + list(combo)} for combo in combos]}


def _name_of(dname: str, names: dict[str, str]) -> str:
    for name, d in names.items():
        if d == dname:
            return name
    return ""


def compile_rules(rules: Sequence[Rule]) -> CompiledRuleSet:
    """Every enabled rule compiled; raises RuleError (naming the rule) on what durable cannot run."""
    compiled: list[CompiledRule] = []
    groups: dict[str, CompiledGroup] = {}
    seen: set[str] = set()
    for index, rule in enumerate(rules):
        if rule.rule in seen:
            raise RuleError(f"rule {rule.rule!r} is defined twice")
        seen.add(rule.rule)
        if not rule.enabled:
            continue
        crule, fields = compile_rule(rule, index)
        compiled.append(crule)
        group = groups.get(crule.by)
        if group is None:
            group = groups[crule.by] = CompiledGroup(by=crule.by, rules=[], fields=frozenset())
        group.rules.append(crule)
        fields = {(e, f) for e, f in fields if f not in ALWAYS_SENT}
        group.fields = group.fields | {f for _e, f in fields}
        for event, fname in fields:
            group.fields_by_event[event] = group.fields_by_event.get(event, frozenset()) | {fname}
        for branch in crule.branches:
            group.definition[branch.durable_name] = branch.durable
            group.branches[branch.durable_name] = (crule, branch)
        group.events = group.events | {p.event for p in rule.patterns()} | _absent_events(rule.when)
    windows = [c.within for c in compiled if c.within is not None]
    horizon = max(windows) if windows else DEFAULT_HORIZON_S
    if any(c.within is None and len(c.branches[0].patterns) > 1 for c in compiled):
        horizon = max(horizon, DEFAULT_HORIZON_S)
    digest_src = json.dumps(
        [json.loads(c.rule.model_dump_json()) for c in compiled], sort_keys=True, ensure_ascii=False
    )
    return CompiledRuleSet(
        rules=compiled,
        groups=groups,
        horizon=horizon,
        max_cooldown=max((c.cooldown for c in compiled), default=0.0),
        digest=hashlib.sha256(digest_src.encode()).hexdigest()[:16],
    )


def _absent_events(group: Group) -> set[str]:
    out = {p.event for p in group.none or []}
    for member in group.members:
        if isinstance(member, Group):
            out |= _absent_events(member)
    return out


def check_rule(rule: Rule) -> list[str]:
    """Problems the compiler finds in one rule (empty when it compiles); for `rules check`."""
    try:
        compile_rule(rule, 0)
    except RuleError as exc:
        return [exc.message]
    return []


__all__ = [
    "Branch",
    "CompiledGroup",
    "CompiledPattern",
    "CompiledRule",
    "CompiledRuleSet",
    "check_rule",
    "compile_rule",
    "compile_rules",
    "durable_field",
    "translate_regex",
]
