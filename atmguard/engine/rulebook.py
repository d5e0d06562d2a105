"""The rules as the engine runs them: the RuleEngine interface, a stand-in when there is no rule
pack, and the longest window (which sizes how long the state keeps events)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from atmguard import rules as rule_language
from atmguard.core.contracts import BankEvent, BehaviorFact, Intervention

if TYPE_CHECKING:
    from atmguard.rules.ruleset import RuleSet

Event = BehaviorFact | BankEvent

EXPIRY_MARGIN_S = 60.0
"""Events are kept this much longer than the longest rule window (late events still find them)."""


class RuleEngineLike(Protocol):
    """What the engine needs of atmguard.rules.RuleEngine."""

    def feed(self, event: Event) -> list[Intervention]: ...
    def swap(self, new_ruleset: RuleSet) -> None: ...
    def sweep(self, now: datetime) -> int: ...
    def close(self) -> None: ...


class NoRules:
    """Stands in when there is no rule pack (empty folder): consumes events, fires nothing."""

    def feed(self, event: Event) -> list[Intervention]:
        return []

    def swap(self, new_ruleset: RuleSet) -> None:
        return None

    def sweep(self, now: datetime) -> int:
        return 0

    def close(self) -> None:
        return None


def make_rule_engine(ruleset: RuleSet | None) -> RuleEngineLike:
    """A RuleEngine over `ruleset` (the only thing wrapping durable_rules), or one that fires nothing."""
    if ruleset is None:
        return NoRules()
    # the package loads the runtime (durable's native engine) on this first use: an engine without
    # rules never loads it, and where it cannot load (ImportError) the caller still consumes events
    return rule_language.RuleEngine(ruleset)


def longest_window_s(ruleset: RuleSet | None) -> float:
    """The longest `within:` or `cooldown:` of the rules (0 when none)."""
    longest = 0.0
    for rule in ruleset.rules if ruleset is not None else []:
        longest = max(longest, float(rule.when.within or 0.0), float(rule.cooldown or 0.0))
    return longest


def state_ttl_s(dedupe_ttl_s: float, ruleset: RuleSet | None) -> float:
    """How long (event time) the state keeps an event: the dedupe TTL, at least the rules' longest span + margin."""
    return max(dedupe_ttl_s, longest_window_s(ruleset) + EXPIRY_MARGIN_S)
