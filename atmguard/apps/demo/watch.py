"""What `atmguard demo` shows after a rule fires: SMS, radio calls, the CAD webhook, an officer's
acknowledgement by SMS reply, and escalation of an intervention nobody acknowledged.

`DemoWatcher.poll()` is called between published events and while the demo waits for the end;
it reads the local Twilio server's recorded requests, the CAD receiver, and the notifier's
status of each intervention (`NotifierService.status`), and prints what changed.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from atmguard.core.contracts import Intervention

KIND_WIDTH = 8


def mask(number: str | None) -> str:
    try:
        from atmguard.notifier.masking import mask_phone

        return mask_phone(number)
    except ImportError:  # pragma: no cover
        n = number or ""
        return n[:5] + "*" * max(0, len(n) - 7) + n[-2:]


@dataclass
class Timeline:
    """Prints one line per thing that happened, with the scenario clock and the wall offset."""

    delta: timedelta
    tz: Any
    t0: float = field(default_factory=time.monotonic)
    lines: int = 0

    def scenario_time(self, ts: datetime | None) -> str:
        if ts is None:
            return " " * 8
        return (ts - self.delta).astimezone(self.tz).strftime("%H:%M:%S")

    def say(self, ts: datetime | None, kind: str, text: str) -> None:
        wall = time.monotonic() - self.t0
        sys.stdout.write(f" {self.scenario_time(ts)}  {wall:6.2f}s  {kind:<{KIND_WIDTH}} {text}\n")
        sys.stdout.flush()
        self.lines += 1


def _targets(step: dict[str, Any]) -> str:
    parts = [f"{k}: {', '.join(str(x) for x in v)}" for k in ("sms", "radio", "webhook") if (v := step.get(k))]
    return "; ".join(parts) or "nobody"


@dataclass
class DemoWatcher:
    """Follows notifications; acknowledges the first escalating intervention by an officer's SMS reply."""

    timeline: Timeline
    interventions: list[Intervention]
    sink: Any = None  # TwilioSink, or None with real Twilio credentials
    notifier: Any = None  # NotifierService
    receiver: Any = None  # CadReceiver
    escalation_after: list[float] = field(default_factory=list)
    escalation_steps: list[dict[str, Any]] = field(default_factory=list)
    sms: int = 0
    radio: int = 0
    webhooks: int = 0
    acked: dict[str, str] = field(default_factory=dict)  # intervention id -> by whom
    escalated: dict[str, int] = field(default_factory=dict)  # intervention id -> steps taken
    _seen_sids: set[str] = field(default_factory=set)
    _seen_hooks: int = 0
    _ack_target: str | None = None
    _ack_note: bool = False
    _settled: dict[str, bool] = field(default_factory=dict)

    def _by_code(self, text: str | None) -> Intervention | None:
        for iv in self.interventions:
            if text and re.search(rf"\b{re.escape(iv.short_code)}\b", text):
                return iv
        return None

    async def poll(self) -> None:
        """Print what happened since the last poll (order: escalations, then what they sent)."""
        requests = [r for r in list(self.sink.requests) if r.sid and r.sid not in self._seen_sids and r.accepted] \
            if self.sink is not None else []
        statuses = await self._statuses()
        for iv in self.interventions:
            st = statuses.get(iv.id)
            if st is None:
                continue
            self._settled[iv.id] = st.state != "open" or not st.pending_escalations
            done = self.escalated.get(iv.id, 0)
            for step in range(done + 1, st.escalation_step + 1):
                after = self.escalation_after[step - 1] if step <= len(self.escalation_after) else 0.0
                targets = _targets(self.escalation_steps[step - 1]) if step <= len(self.escalation_steps) else "?"
                self.timeline.say(None, "ESCALATE", f"{iv.short_code} ({iv.rule}) unacknowledged {after:g}s after it "
                                  f"was sent: escalation step {step} -> {targets}")
            if st.escalation_step > done:
                self.escalated[iv.id] = st.escalation_step
        first_sms: list[tuple[Any, Intervention]] = []
        for req in requests:
            self._seen_sids.add(req.sid)
            if req.kind == "message":
                self.sms += 1
                body = (req.body or "").replace("\n", " ")
                self.timeline.say(None, "SMS", f"to {mask(req.to)}: {body[:150]}{'...' if len(body) > 150 else ''}")
                about = self._by_code(body)
                if about is not None:
                    first_sms.append((req, about))
            else:
                self.radio += 1
                said = " ".join(re.findall(r"<Say[^>]*>(.*?)</Say>", req.twiml or "", flags=re.S))[:140]
                self.timeline.say(None, "RADIO", f"call to radio gateway {mask(req.to)}: \"{said}...\"")
        self._follow_webhooks()
        for req, about in first_sms:
            st = statuses.get(about.id)
            if self._ack_target is None and about.mode == "enforce" and st is not None and st.pending_escalations:
                self._ack_target = about.id
                await self._reply_ok(req.to, about, len(st.pending_escalations))

    def _follow_webhooks(self) -> None:
        if self.receiver is None:
            return
        got = self.receiver.snapshot()
        for rec in got[self._seen_hooks:]:
            self.webhooks += rec.verified
            verdict = "signature verified (HMAC-SHA256)" if rec.verified else "BAD SIGNATURE, refused (401)"
            self.timeline.say(None, "WEBHOOK", f"CAD receiver ({rec.name}) got intervention {rec.intervention_id} "
                              f"({rec.short_code}, {rec.rule}): {verdict}")
        self._seen_hooks = len(got)

    async def _statuses(self) -> dict[str, Any]:
        if self.notifier is None:
            return {}
        ids = [iv.id for iv in self.interventions if iv.mode == "enforce"]
        if not ids:
            return {}
        return await asyncio.to_thread(lambda: {i: s for i in ids if (s := self.notifier.status(i)) is not None})

    async def _reply_ok(self, number: str | None, iv: Intervention, pending: int) -> None:
        """The officer who got this SMS replies "OK <code>", played back through the local Twilio server."""
        text = f"OK {iv.short_code}"
        if self.sink is None or not number:
            if not self._ack_note:
                self._ack_note = True
                self.timeline.say(None, "ACK", "(no local Twilio server: reply to the SMS from a listed officer's "
                                  "phone to acknowledge, or use the console)")
            return
        resp = await asyncio.to_thread(self.sink.send_inbound_sms, number, text)
        answer = " ".join(re.findall(r"<Message[^>]*>(.*?)</Message>", resp.text or "", flags=re.S))
        st = await asyncio.to_thread(self.notifier.status, iv.id) if self.notifier is not None else None
        if resp.status_code == 200 and st is not None and st.state == "acknowledged":
            self.acked[iv.id] = st.acked_by or mask(number)
            self.timeline.say(None, "ACK", f"{iv.short_code} ({iv.rule}) acknowledged: {mask(number)} replied "
                              f"\"{text}\" by SMS -> {pending} escalation step(s) cancelled")
            if answer:
                self.timeline.say(None, "", f"          reply to the officer: \"{answer}\"")
        else:
            self.timeline.say(None, "ACK", f"reply \"{text}\" from {mask(number)} was not taken "
                              f"(HTTP {resp.status_code}, state {st.state if st else '?'})")

    def settled(self) -> bool:
        """Every enforced intervention acknowledged or through all its escalation steps; webhooks arrived."""
        enforced = [iv for iv in self.interventions if iv.mode == "enforce"]
        if self.notifier is not None and not all(self._settled.get(iv.id, False) for iv in enforced):
            return False
        want_hooks = sum(1 for iv in enforced if iv.actions.webhook)
        return self.receiver is None or self._seen_hooks >= want_hooks
