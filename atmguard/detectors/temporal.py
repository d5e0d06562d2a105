"""Noisy per-frame signals -> behaviour facts, with hysteresis and minimum durations.

A fact is emitted when a behaviour starts, then at most every `emit_every_s` while it lasts,
and once when it ends (`ended=true`). A scratch of the ear is not a call: the hand must be at
the ear for `on_phone_after_s` (most frames), and the call ends only after `on_phone_end_s`
without it. Time is the frame's timestamp (the video's own timeline for files).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from atmguard.core.contracts import BehaviorFact
from atmguard.detectors.config import Thresholds
from atmguard.detectors.signals import FrameSignals

Transition = Literal["start", "update", "end"]


@dataclass
class Hold:
    """Hysteresis on a boolean: on after `on_s` of mostly-true frames, off after `off_s` of false ones."""

    on_s: float
    off_s: float
    min_fraction: float = 0.6
    active: bool = False
    started_at: datetime | None = None
    last_true: datetime | None = None
    last_emit: datetime | None = None
    _window: deque[tuple[datetime, bool, float]] = field(default_factory=deque)

    def update(self, ts: datetime, value: bool, conf: float = 1.0) -> Transition | None:
        """Feed one frame; says whether the behaviour started or ended at it."""
        self._window.append((ts, value, conf))
        if value:
            self.last_true = ts
        if not self.active:
            # the candidate run starts at the first true frame after the last long gap
            while self._window and (not self._window[0][1] or (ts - self._window[0][0]).total_seconds() > self.on_s + self.off_s):
                self._window.popleft()
            if not self._window or self.last_true is None:
                return None
            if (ts - self.last_true).total_seconds() > self.off_s:
                self._window.clear()
                return None
            first = self._window[0][0]
            span = (ts - first).total_seconds()
            share = sum(1 for _, v, _ in self._window if v) / len(self._window)
            if value and span >= self.on_s and share >= self.min_fraction:
                self.active, self.started_at, self.last_emit = True, first, None
                return "start"
            return None
        # active: keep a short window for confidence, end after off_s without the signal
        while self._window and (ts - self._window[0][0]).total_seconds() > max(self.on_s, 2.0):
            self._window.popleft()
        if self.last_true is not None and (ts - self.last_true).total_seconds() >= self.off_s:
            self.active = False
            return "end"
        return None

    def confidence(self) -> float:
        if not self._window:
            return 0.0
        trues = [c for _, v, c in self._window if v]
        if not trues:
            return 0.5
        return round(min(1.0, (len(trues) / len(self._window)) * (sum(trues) / len(trues))), 3)

    def reset(self) -> None:
        self.active, self.started_at, self.last_true, self.last_emit = False, None, None, None
        self._window.clear()


@dataclass
class GlanceCounter:
    """Counts distinct glances away: |yaw - offset| rising above `away`, after falling below `back`."""

    away: float
    back: float
    offset: float = 0.0
    window_s: float = 30.0
    glances: deque[datetime] = field(default_factory=deque)
    _is_away: bool = False
    _side: int = 0
    last_yaw: float | None = None
    last_ts: datetime | None = None
    yaw_rate: float = 0.0  # yaw units per second, smoothed

    def update(self, ts: datetime, yaw: float | None) -> None:
        if yaw is not None:
            rel = yaw - self.offset
            if self.last_yaw is not None and self.last_ts is not None:
                dt = (ts - self.last_ts).total_seconds()
                if dt > 0:
                    self.yaw_rate = 0.5 * self.yaw_rate + 0.5 * (yaw - self.last_yaw) / dt
            self.last_yaw, self.last_ts = yaw, ts
            side = 1 if rel > 0 else -1
            if not self._is_away and abs(rel) > self.away:
                self._is_away, self._side = True, side
                self.glances.append(ts)
            elif self._is_away and (abs(rel) < self.back or (abs(rel) > self.away and side != self._side)):
                # back to the screen, or swung straight across to the other side (a new glance)
                self._is_away = abs(rel) > self.away
                if self._is_away:
                    self._side = side
                    self.glances.append(ts)
        while self.glances and (ts - self.glances[0]).total_seconds() > self.window_s:
            self.glances.popleft()

    def count(self) -> int:
        return len(self.glances)

    def reset(self) -> None:
        self.glances.clear()
        self._is_away, self.last_yaw, self.last_ts, self.yaw_rate = False, None, None, 0.0


@dataclass
class _Behaviour:
    name: str
    active: bool = False
    started_at: datetime | None = None
    last_emit: datetime | None = None
    seq: int = 0


class BehaviourTracker:
    """The temporal logic of one camera: feed FrameSignals, get BehaviorFacts."""

    def __init__(self, atm_id: str, camera_id: str, thr: Thresholds) -> None:
        self.atm_id, self.camera_id, self.thr = atm_id, camera_id, thr
        self.present = Hold(thr.present_after_s, thr.present_end_s, min_fraction=0.5)
        self.phone = Hold(thr.on_phone_after_s, thr.on_phone_end_s, min_fraction=thr.on_phone_min_fraction)
        self.gaze = Hold(thr.gaze_away_after_s, thr.gaze_back_s, min_fraction=0.6)
        self.glances = GlanceCounter(thr.yaw_away, thr.yaw_back, thr.yaw_offset, thr.glance_window_s)
        self.looking = _Behaviour("looking_around")
        self.visits = 0
        self.last_ts: datetime | None = None
        self.last_signals: FrameSignals | None = None

    # -- facts --------------------------------------------------------------------------------
    def _fact(self, behavior: str, ts: datetime, started_at: datetime, conf: float, *, ended: bool = False,
              count: int | None = None, window_s: float | None = None, until: datetime | None = None) -> BehaviorFact:
        """`until` is when the behaviour was last seen (end facts): duration runs to it, not to `ts`."""
        duration = max(0.0, ((until or ts) - started_at).total_seconds())
        stamp = int(started_at.timestamp() * 1000)
        tail = "end" if ended else str(int(round(duration * 1000)))
        return BehaviorFact(
            id=f"{self.camera_id}-{behavior}-{stamp}-{tail}",
            atm_id=self.atm_id, camera_id=self.camera_id, behavior=behavior,  # type: ignore[arg-type]
            ts=ts, started_at=started_at, duration_s=round(duration, 3), count=count, window_s=window_s,
            confidence=max(0.0, min(1.0, round(conf, 3))),
            track_id=f"{self.camera_id}-v{self.visits}" if self.visits else None,
            ended=ended,
        )

    def _hold_facts(self, name: str, hold: Hold, tr: Transition | None, ts: datetime) -> list[BehaviorFact]:
        out: list[BehaviorFact] = []
        if tr == "start" and hold.started_at is not None:
            hold.last_emit = ts
            out.append(self._fact(name, ts, hold.started_at, hold.confidence()))
        elif tr == "end" and hold.started_at is not None:
            out.append(self._fact(name, ts, hold.started_at, hold.confidence(), ended=True, until=hold.last_true))
            hold.started_at = None
        elif hold.active and hold.started_at is not None and hold.last_emit is not None \
                and (ts - hold.last_emit).total_seconds() >= self.thr.emit_every_s:
            hold.last_emit = ts
            out.append(self._fact(name, ts, hold.started_at, hold.confidence()))
        return out

    def update(self, ts: datetime, s: FrameSignals) -> list[BehaviorFact]:
        """One analysed frame -> the facts it causes (often none)."""
        self.last_ts, self.last_signals = ts, s
        out: list[BehaviorFact] = []
        here = s.person and s.in_zone
        was_present = self.present.active
        tr = self.present.update(ts, here, 1.0 if here else 0.0)
        if tr == "start":
            self.visits += 1
        if tr == "end":
            # the person left: everything they were doing ends with the visit
            out += self._end_person(ts)
        out += self._hold_facts("present", self.present, tr, ts)
        if not was_present and not self.present.active and tr is None and not here:
            return out
        ph = self.phone.update(ts, here and s.hand.value, s.hand.confidence)
        out += self._hold_facts("on_phone", self.phone, ph, ts)
        gz = self.gaze.update(ts, here and s.face and s.gaze_away, 0.8 if s.head_away else 0.6)
        out += self._hold_facts("gaze_away", self.gaze, gz, ts)
        self.glances.update(ts, s.yaw if here else None)
        out += self._looking_facts(ts)
        return out

    def _looking_facts(self, ts: datetime) -> list[BehaviorFact]:
        n = self.glances.count()
        b = self.looking
        w = self.thr.glance_window_s
        conf = min(1.0, 0.5 + 0.1 * n)
        if not b.active and n >= self.thr.min_glances:
            b.active, b.started_at, b.last_emit = True, self.glances.glances[0], ts
            return [self._fact("looking_around", ts, b.started_at, conf, count=n, window_s=w)]
        if b.active and n < self.thr.min_glances and b.started_at is not None:
            b.active = False
            started, b.started_at = b.started_at, None
            return [self._fact("looking_around", ts, started, conf, count=n, window_s=w, ended=True)]
        if b.active and b.started_at is not None and b.last_emit is not None \
                and (ts - b.last_emit).total_seconds() >= self.thr.emit_every_s:
            b.last_emit = ts
            return [self._fact("looking_around", ts, b.started_at, conf, count=n, window_s=w)]
        return []

    def _end_person(self, ts: datetime) -> list[BehaviorFact]:
        out: list[BehaviorFact] = []
        for name, hold in (("on_phone", self.phone), ("gaze_away", self.gaze)):
            if hold.active and hold.started_at is not None:
                out.append(self._fact(name, ts, hold.started_at, hold.confidence(), ended=True, until=hold.last_true))
            hold.reset()
        if self.looking.active and self.looking.started_at is not None:
            out.append(self._fact("looking_around", ts, self.looking.started_at, 0.6,
                                  count=self.glances.count(), window_s=self.thr.glance_window_s, ended=True))
        self.looking.active, self.looking.started_at = False, None
        self.glances.reset()
        return out

    def finish(self, ts: datetime | None = None) -> list[BehaviorFact]:
        """End of the stream: every active behaviour ends here."""
        ts = ts or self.last_ts
        if ts is None:
            return []
        out = self._end_person(ts)
        if self.present.active and self.present.started_at is not None:
            out.append(self._fact("present", ts, self.present.started_at, self.present.confidence(), ended=True,
                                  until=self.present.last_true))
        self.present.reset()
        return out
