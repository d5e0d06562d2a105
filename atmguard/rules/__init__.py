"""The rule language: YAML rules validated with pydantic, compiled to durable_rules.

    from atmguard.rules import load_rules, RuleSet, RuleEngine
"""

from atmguard.rules.ruleset import RuleSet, load_rules
from atmguard.rules.runtime import RuleEngine

__all__ = ["RuleEngine", "RuleSet", "load_rules"]
