"""Hold advice: should the bank stop this operation now?

The advisor keeps its own RuleEngine fed with the facts and bank events of the stream, and
tracks open interventions (from the interventions topic and from its own firings) whose rule
asks `hold: true`. A bank event gets "hold" when its ATM has such an open intervention, or
when `engine.peek(event)` says a hold rule would fire on this very event. So the advice for
the event itself comes back in the same request, from the current state of that ATM, not
only from what the stream has already processed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from pydantic import BaseModel

from atmguard.core.contracts import BankEvent, BehaviorFact, Intervention

log = logging.getLogger(__name__)


class Engine(Protocol):
    """What the advisor needs of atmguard.rules.RuleEngine."""

    def feed(self, event: Any) -> list[Intervention]: ...

    def peek(self, event: Any) -> list[Intervention]: ...

    def sweep(self, now: datetime) -> int: ...


class Advice(BaseModel):
    """The answer to one bank event."""

    advice: Literal["hold", "allow"]
    intervention_id: str | None = None
    reason: str | None = None

    def as_answer(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


ALLOW = Advice(advice="allow")


@dataclass
class _Hold:
    intervention: Intervention
    expires: float


@dataclass
class HoldAdvisor:
    """Per-ATM hold state plus a rule engine to evaluate the event in hand."""

    engine: Engine | None = None
    hold_ttl_s: float = 1800.0
    clock: Callable[[], float] = time.monotonic
    _holds: dict[str, dict[str, _Hold]] = field(default_factory=dict)
    _closed: set[str] = field(default_factory=set)
    _latest_ts: datetime | None = None
    _last_sweep: float = 0.0
    watcher: RulesWatcher | None = None

    # --- state from the stream -------------------------------------------------------
    def on_event(self, event: BehaviorFact | BankEvent) -> None:
        """A fact or bank event from the topics (duplicates are ignored by the engine)."""
        if self._latest_ts is None or event.ts > self._latest_ts:
            self._latest_ts = event.ts
        if self.engine is None:
            return
        try:
            fired = self.engine.feed(event)
        except Exception:  # a rule engine problem must not stop the gateway
            log.exception("advisor engine failed on event %s", event.id)
            return
        for iv in fired:
            self.on_intervention(iv)
        self._maybe_sweep()

    def on_intervention(self, iv: Intervention) -> None:
        """An intervention opened (topic or own firing); remember it if it asks to hold."""
        if not iv.actions.hold or iv.mode != "enforce" or iv.id in self._closed:
            return
        self._holds.setdefault(iv.atm_id, {})[iv.id] = _Hold(iv, self.clock() + self.hold_ttl_s)

    def on_closed(self, intervention_id: str, atm_id: str | None = None) -> None:
        """A dispatcher closed the case: stop advising hold for it."""
        self._closed.add(intervention_id)
        for atm, holds in list(self._holds.items()):
            if atm_id in (None, atm):
                holds.pop(intervention_id, None)
                if not holds:
                    self._holds.pop(atm, None)

    # --- the answer ------------------------------------------------------------------
    def open_hold(self, atm_id: str) -> Intervention | None:
        """The newest open hold intervention at this ATM, if any."""
        holds = self._holds.get(atm_id)
        if not holds:
            return None
        now = self.clock()
        for iv_id in [k for k, h in holds.items() if h.expires < now]:
            holds.pop(iv_id)
        if not holds:
            self._holds.pop(atm_id, None)
            return None
        return max(holds.values(), key=lambda h: h.intervention.ts).intervention

    def advise(self, event: BankEvent) -> Advice:
        """Hold or allow for this bank event, before it is fed."""
        if not event.atm_id:
            return ALLOW
        open_iv = self.open_hold(event.atm_id)
        if open_iv is not None:  # already being handled: one intervention id for the bank to quote
            return Advice(advice="hold", intervention_id=open_iv.id, reason=open_iv.message)
        if self.engine is not None:
            try:
                fired = self.engine.peek(event)
            except Exception:
                log.exception("advisor peek failed on event %s", event.id)
                fired = []
            holds = [iv for iv in fired if iv.actions.hold and iv.mode == "enforce" and iv.id not in self._closed]
            if holds:
                iv = holds[0]
                return Advice(advice="hold", intervention_id=iv.id, reason=iv.message)
        return ALLOW

    def advise_and_feed(self, event: BankEvent) -> Advice:
        """`advise` then `accepted` in one rule evaluation: what feeding fires is what peek would say."""
        open_iv = self.open_hold(event.atm_id) if event.atm_id else None
        self.on_event(event)  # fires this event's rules and remembers their hold interventions
        if not event.atm_id:
            return ALLOW
        if open_iv is None:
            open_iv = self.open_hold(event.atm_id)
        if open_iv is not None:
            return Advice(advice="hold", intervention_id=open_iv.id, reason=open_iv.message)
        return ALLOW

    def accepted(self, event: BankEvent) -> None:
        """The event was published: feed it now so the next event of this ATM sees it."""
        self.on_event(event)

    def _maybe_sweep(self) -> None:
        now = self.clock()
        if self.engine is None or self._latest_ts is None or now - self._last_sweep < 30:
            return
        self._last_sweep = now
        try:
            self.engine.sweep(self._latest_ts)
        except Exception:
            log.exception("advisor sweep failed")


def _loader() -> Callable[[list[Any]], Any]:
    import importlib

    return getattr(importlib.import_module("atmguard.rules"), "load_rules", None) or _load_rule_files


def _rules_signature(rules_dir: Any) -> tuple[tuple[str, int, int], ...]:
    from pathlib import Path

    root = Path(rules_dir)
    files = sorted(root.rglob("*.y*ml")) if root.is_dir() else [root] if root.exists() else []
    return tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in files if f.is_file())


@dataclass
class RulesWatcher:
    """Hot reload of the advisor's rules, like the engine's: a changed, valid pack is swapped in;
    an invalid one is logged and the running rules stay."""

    advisor: HoldAdvisor
    rules_dir: Any
    signature: tuple[tuple[str, int, int], ...] = ()

    def check(self) -> bool:
        """Reload if a rule file changed (cheap: stats only); True when a new pack was swapped in."""
        try:
            sig = _rules_signature(self.rules_dir)
        except OSError:
            return False
        if sig == self.signature:
            return False
        self.signature = sig
        engine = self.advisor.engine
        if engine is None or not hasattr(engine, "swap"):
            return False
        try:
            engine.swap(_loader()([self.rules_dir]))
        except Exception as exc:
            log.error("hold advisor keeps its rules: the changed rule pack is invalid: %s", exc)
            return False
        log.info("hold advisor reloaded the rules from %s", self.rules_dir)
        return True


def advisor_from_rules(rules_dir: Any, hold_ttl_s: float = 1800.0) -> HoldAdvisor:
    """An advisor with a RuleEngine over the rule pack; without rules (or runtime), open holds only."""
    engine: Engine | None = None
    try:
        import importlib

        rule_engine = importlib.import_module("atmguard.rules.runtime").RuleEngine
        signature = _rules_signature(rules_dir)
        engine = rule_engine(_loader()([rules_dir]))
    except Exception as exc:
        log.warning("hold advisor runs without a rule engine (%s): only open interventions advise hold", exc)
        signature = ()
    advisor = HoldAdvisor(engine=engine, hold_ttl_s=hold_ttl_s)
    advisor.watcher = RulesWatcher(advisor, rules_dir, signature)
    return advisor


@dataclass
class _Pack:
    rules: list[Any]
    digest: str


def _load_rule_files(paths: list[Any]) -> _Pack:
    """Plain YAML rule files (used only until the rule-language loader is installed)."""
    import hashlib
    from pathlib import Path

    from ruamel.yaml import YAML

    from atmguard.rules.schema import Rule

    rules: list[Any] = []
    digest = hashlib.sha256()
    for root in paths:
        root = Path(root)
        files = sorted(root.rglob("*.y*ml")) if root.is_dir() else [root]
        for f in files:
            text = f.read_text(encoding="utf-8")
            digest.update(text.encode())
            data = YAML(typ="safe").load(text)
            items = data.get("rules", [data]) if isinstance(data, dict) else data or []
            rules.extend(Rule.model_validate(item) for item in items)
    return _Pack(rules, digest.hexdigest())
