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
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel

from atmguard.core.contracts import BankEvent, BehaviorFact, Intervention
from atmguard.rules.reload import RulePackWatcher
from atmguard.rules.ruleset import RuleSet
from atmguard.rules.runtime import RuleEngine

log = logging.getLogger(__name__)


class Engine(Protocol):
    """What the advisor needs of atmguard.rules.RuleEngine."""

    def feed(self, event: Any) -> list[Intervention]: ...

    def peek(self, event: Any) -> list[Intervention]: ...

    def sweep(self, now: datetime) -> int: ...

    def swap(self, new_ruleset: RuleSet) -> None: ...


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
    watcher: RulePackWatcher | None = None

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

    def use_rules(self, pack: RuleSet | None) -> None:
        """Run a new valid pack (the watcher's `install`); a RuleError leaves the running rules."""
        if self.engine is not None:
            # state carried over; no rule file left: nothing fires, open holds still advise
            self.engine.swap(pack if pack is not None else RuleSet(rules=[]))
        elif pack is not None:
            self.engine = RuleEngine(pack)  # the first valid pack since start-up

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
            except Exception:  # a rule engine problem must not fail the bank's request: allow, logged
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
        except Exception:  # a failed sweep only keeps stale state a while longer; the next one retries
            log.exception("advisor sweep failed")


def advisor_from_rules(rules_dir: Path | str, hold_ttl_s: float = 1800.0) -> HoldAdvisor:
    """An advisor with a RuleEngine over the rule pack; without valid rules, open holds only.

    Its `watcher` (atmguard.rules.reload, the engine's mechanism) is started by whoever runs the
    advisor beside the stream: a changed, valid pack is swapped in; an invalid one is logged and
    the running rules stay.
    """
    advisor = HoldAdvisor(hold_ttl_s=hold_ttl_s)
    watcher = RulePackWatcher(Path(rules_dir), advisor.use_rules, logger=log)
    pack = watcher.first_load("invalid rules, the hold advisor runs without them")
    if pack is not None:
        try:
            advisor.use_rules(pack)
        except Exception as exc:  # noqa: BLE001 - the gateway answers banks without rules too
            log.warning("hold advisor rules do not compile (%s)", exc)
            watcher.digest = None  # nothing runs: the same pack, once it compiles, is a change
    if advisor.engine is None:
        log.warning("hold advisor runs without a rule engine until valid rules are in %s: only open "
                    "interventions advise hold", rules_dir)
    advisor.watcher = watcher
    return advisor
