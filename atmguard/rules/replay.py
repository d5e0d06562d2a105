"""Replay (backtest): recorded events through the compiled rules, in event-time order, no broker.

Labels say what really happened, so a replay can be scored like Jube's backtest: precision (how
many interventions were at a real scam), recall (how many real scams got an intervention) and the
misses. A labels file is YAML (a list) or JSONL (one object per line); each label is either

    - {name: Zhezkazgan, atm_id: ATM-ZKZ-017, from: 2026-02-14T11:00:00+05:00, to: 2026-02-14T11:20:00+05:00}
    - {name: card shop scam, events: [trx-8812, trx-8813]}     # or `event: trx-8812`

An intervention is *at* a label when its ATM is the label's ATM and its time lies in [from, to],
or when its evidence contains one of the label's event ids.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

from atmguard.core import yamlpos
from atmguard.core.contracts import BankEvent, BehaviorFact, Intervention, event_sort_key, parse_event
from atmguard.core.errors import EventError, RuleError
from atmguard.rules.ruleset import RuleSet

Event = BehaviorFact | BankEvent


# --------------------------------------------------------------------------- events


def iter_event_lines(paths: Iterable[str | Path]) -> Iterator[Event | EventError]:
    """Every event of some JSONL files, or an EventError (file:line, field) for a bad line; never stops early."""
    for raw_path in paths:
        path = Path(raw_path)
        try:
            fh = path.open(encoding="utf-8")
        except OSError as exc:
            yield EventError(f"cannot read: {exc.strerror or exc}", source=str(path))
            continue
        with fh:
            for lineno, raw in enumerate(fh, start=1):
                text = raw.strip()
                if not text or text.startswith("#"):
                    continue
                try:
                    yield parse_event(text, source=str(path), line=lineno)
                except EventError as exc:
                    yield exc


def load_events(paths: Iterable[str | Path]) -> tuple[list[Event], list[EventError]]:
    """Events of several files merged in event-time order (ties by id), and the lines that were bad."""
    events: list[Event] = []
    errors: list[EventError] = []
    for item in iter_event_lines(paths):
        (errors if isinstance(item, EventError) else events).append(item)  # type: ignore[arg-type]
    events.sort(key=event_sort_key)
    return events, errors


def _in_order(path: Path) -> bool:
    """Is a JSONL file already in (ts, id) order? A cheap pass that only reads those two fields."""
    last: tuple[datetime, str] | None = None
    try:
        with path.open(encoding="utf-8") as fh:
            for raw in fh:
                text = raw.strip()
                if not text or text.startswith("#"):
                    continue
                try:
                    data = json.loads(text)
                    key = (datetime.fromisoformat(str(data["ts"])), str(data["id"]))
                    if key[0].tzinfo is None:
                        continue
                except (ValueError, KeyError, TypeError):
                    continue  # a bad line: reported (and skipped) by the real pass
                if last is not None and key < last:
                    return False
                last = key
    except OSError:
        return True  # the real pass reports it
    return True


def stream_events(paths: Iterable[str | Path], errors: list[EventError]) -> Iterator[Event]:
    """Events of several files in event-time order (ties by id); bad lines go to `errors`.

    Files already in order (the usual recording) are merged as they are read, so a day of
    events never has to fit in memory; otherwise everything is loaded and sorted.
    """
    files = [Path(p) for p in paths]

    def good(path: Path) -> Iterator[Event]:
        for item in iter_event_lines([path]):
            if isinstance(item, EventError):
                errors.append(item)
            else:
                yield item

    if all(_in_order(p) for p in files):
        yield from heapq.merge(*(good(p) for p in files), key=event_sort_key)
        return
    events, bad = load_events(files)
    errors.extend(bad)
    yield from events


def replay_iter(ruleset: RuleSet, events: Iterable[Event]) -> Iterator[Intervention]:
    """Feed events (already in time order) to one fresh RuleEngine; interventions as they fire."""
    from atmguard.rules.runtime import RuleEngine

    engine = RuleEngine(ruleset)
    try:
        for event in events:
            yield from engine.feed(event)
    finally:
        engine.close()


def replay(ruleset: RuleSet, events: Iterable[Event]) -> list[Intervention]:
    """Every intervention of a replay, in order."""
    return list(replay_iter(ruleset, events))


# --------------------------------------------------------------------------- labels


class Label(BaseModel):
    """A known real scam: an ATM and a time range, or the ids of its events."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str | None = None
    atm_id: str | None = None
    from_: AwareDatetime | None = Field(default=None, alias="from")
    to: AwareDatetime | None = None
    event: str | None = None
    events: list[str] = Field(default_factory=list)
    where: str = Field(default="", exclude=True)

    @model_validator(mode="after")
    def _one_kind(self) -> Label:
        if self.event:
            self.events = [*self.events, self.event]
        ranged = self.atm_id is not None or self.from_ is not None or self.to is not None
        if ranged and (self.atm_id is None or self.from_ is None or self.to is None):
            raise ValueError("a range label needs atm_id, from and to")
        if ranged and self.from_ is not None and self.to is not None and self.to < self.from_:
            raise ValueError("`to` is before `from`")
        if not ranged and not self.events:
            raise ValueError("a label is either {atm_id, from, to} or {events: [ids]} / {event: id}")
        return self

    @property
    def title(self) -> str:
        if self.name:
            return self.name
        if self.atm_id:
            return f"{self.atm_id} {self.from_:%Y-%m-%d %H:%M}-{self.to:%H:%M}"
        return "events " + ", ".join(self.events)

    def covers(self, iv: Intervention) -> bool:
        """Is this intervention at this scam?"""
        if self.events and set(self.events) & set(iv.evidence):
            return True
        return bool(
            self.atm_id is not None and iv.atm_id == self.atm_id and self.from_ is not None and self.to is not None
            and self.from_ <= iv.ts <= self.to
        )


def _label(data: Any, path: str, line: int) -> Label:
    if not isinstance(data, dict):
        raise EventError("a label is a mapping like {atm_id, from, to} or {events: [ids]}", source=path, line=line)
    try:
        label = Label.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or None
        raise EventError(str(err["msg"]).removeprefix("Value error, "), source=path, line=line, field=where) from None
    label.where = f"{path}:{line}"
    return label


def load_labels(path: str | Path) -> list[Label]:
    """Labels of a YAML (list) or JSONL file; raises EventError naming file and line."""
    p = Path(path)
    labels: list[Label] = []
    if p.suffix == ".jsonl":
        for lineno, raw in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
            text = raw.strip()
            if not text or text.startswith("#"):
                continue
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise EventError(f"not valid JSON: {exc.msg}", source=str(p), line=lineno) from None
            labels.append(_label(data, str(p), lineno))
        return labels
    try:
        tree = yamlpos.read_yaml(p)
    except RuleError as exc:
        raise EventError(exc.message, source=str(p), line=exc.line) from None
    if not isinstance(tree, list):
        raise EventError("a labels file is a list of labels (`- atm_id: ...`)", source=str(p), line=1)
    for i, node in enumerate(tree):
        line, _ = yamlpos.position(tree, (i,))
        labels.append(_label(yamlpos.plain(node), str(p), line))
    return labels


# --------------------------------------------------------------------------- scoring


@dataclass
class RuleScore:
    """One rule's interventions against the labels."""

    rule: str
    mode: str
    fired: int = 0
    true: int = 0

    @property
    def false(self) -> int:
        return self.fired - self.true

    @property
    def precision(self) -> float | None:
        return self.true / self.fired if self.fired else None


@dataclass
class Score:
    """Precision, recall and misses of a replay against labels."""

    interventions: int
    true: int
    labels: int
    caught: int
    misses: list[Label]
    false_alarms: list[Intervention]
    per_rule: list[RuleScore] = field(default_factory=list)

    @property
    def precision(self) -> float | None:
        return self.true / self.interventions if self.interventions else None

    @property
    def recall(self) -> float | None:
        return self.caught / self.labels if self.labels else None


def score(interventions: list[Intervention], labels: list[Label], ruleset: RuleSet | None = None) -> Score:
    """Score every intervention (enforce and shadow) against the labels."""
    per_rule: dict[str, RuleScore] = {}
    if ruleset is not None:
        for rule in ruleset.enabled:
            per_rule[rule.rule] = RuleScore(rule.rule, rule.mode)
    true = 0
    false_alarms: list[Intervention] = []
    caught: set[int] = set()
    for iv in interventions:
        rs = per_rule.setdefault(iv.rule, RuleScore(iv.rule, iv.mode))
        rs.fired += 1
        hits = [i for i, label in enumerate(labels) if label.covers(iv)]
        if hits:
            true += 1
            rs.true += 1
            caught.update(hits)
        else:
            false_alarms.append(iv)
    return Score(
        interventions=len(interventions),
        true=true,
        labels=len(labels),
        caught=len(caught),
        misses=[label for i, label in enumerate(labels) if i not in caught],
        false_alarms=false_alarms,
        per_rule=sorted(per_rule.values(), key=lambda r: r.rule),
    )


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def score_lines(s: Score) -> list[str]:
    """The score as text lines (precision, recall, per rule, misses)."""
    lines = [
        f"precision: {_pct(s.precision)} ({s.true} of {s.interventions} interventions at a labelled scam)",
        f"recall: {_pct(s.recall)} ({s.caught} of {s.labels} labelled scams caught)",
    ]
    for r in s.per_rule:
        shadow = " [shadow]" if r.mode == "shadow" else ""
        lines.append(f"  {r.rule}{shadow}: fired {r.fired}, true {r.true}, false {r.false}, precision {_pct(r.precision)}")
    lines.append(f"misses: {len(s.misses)}")
    for label in s.misses:
        lines.append(f"  MISS {label.title} ({label.where})")
    lines.append(f"false alarms: {len(s.false_alarms)}")
    for iv in s.false_alarms:
        lines.append(f"  FALSE {iv.ts.isoformat()} {iv.atm_id} {iv.rule}")
    return lines


def human_lines(iv: Intervention) -> list[str]:
    """One intervention as readable lines: when, where, which rule (shadow marked), message, evidence."""
    tag = "SHADOW " if iv.mode == "shadow" else ""
    acts = [f"sms:{','.join(iv.actions.sms)}" if iv.actions.sms else "", f"radio:{','.join(iv.actions.radio)}" if iv.actions.radio else "",
            f"webhook:{','.join(iv.actions.webhook)}" if iv.actions.webhook else "", "hold" if iv.actions.hold else ""]
    act = " ".join(a for a in acts if a) or "no actions"
    return [
        f"{iv.ts.isoformat()}  {tag}{iv.severity.upper():8} {iv.rule} v{iv.rule_version}  {iv.atm_id}",
        f"    {iv.message}",
        f"    actions: {act}",
        "    evidence: " + ", ".join(f"{m.pattern}={m.event_id}" for m in iv.matched) if iv.matched else "    evidence: " + ", ".join(iv.evidence),
    ]
