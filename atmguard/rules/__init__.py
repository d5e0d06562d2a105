"""The rule language: YAML rules validated with pydantic, compiled to durable_rules.

    from atmguard.rules import load_rules, RuleSet, RuleEngine

`RuleEngine` is imported on first use: its module loads durable's C engine, which checking,
loading and testing the shape of rules (and reading a notifier config) never need.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from atmguard.rules.ruleset import RuleSet, load_rules

if TYPE_CHECKING:
    from atmguard.rules.runtime import RuleEngine


def __getattr__(name: str) -> Any:
    """PEP 562: `atmguard.rules.RuleEngine` loads the runtime (and durable) only when asked for."""
    if name == "RuleEngine":
        return importlib.import_module("atmguard.rules.runtime").RuleEngine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["RuleEngine", "RuleSet", "load_rules"]
