"""`atmguard bench rules`: replay throughput, memory and reload time of the rule engine.

Throughput is given against durable_rules itself fed the same events in the same run: durable's
`Host.assert_fact` with the same compiled rulesets and no-op actions (what a direct user of
durable_rules would write), and, as a floor, bare C-level `assert_fact` calls on pre-encoded
messages. Each measurement runs in its own forked process (durable never gives memory back), and
each process generates the same deterministic event stream.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import json
import multiprocessing
import random
import resource
import time
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import durable_rules_engine as _dre
import psutil
import typer
from durable import engine as dengine

from atmguard.core.contracts import BankEvent, BehaviorFact
from atmguard.rules import load_rules
from atmguard.rules.compiler import compile_rules, durable_field
from atmguard.rules.runtime import RuleEngine, _event_name, _field_value, _json_value
from atmguard.rules.schema import Rule

T0 = datetime(2026, 2, 10, 6, 0, tzinfo=UTC)

FALLBACK_PACK = [
    {
        "rule": "coached-transfer", "version": 1, "severity": "critical", "cooldown": "10m",
        "when": {"within": "5m", "all": [
            {"event": "on_phone", "where": {"duration_s": {"gte": 60}, "confidence": {"gte": 0.6}}},
            {"event": "looking_around", "where": {"count": {"gte": 3}}},
            {"event": "transfer", "as": "first_transfer",
             "where": {"amount": {"gte": 300000}, "currency": "KZT", "payee_new": True}},
        ]},
        "actions": {"sms": ["patrol"], "radio": ["dispatch"], "hold": True},
        "message": "{atm_id}: transfer {first_transfer.amount} while on the phone",
    },
    {
        "rule": "coached-withdrawal", "version": 1, "severity": "high", "cooldown": "10m",
        "when": {"within": "5m", "all": [
            {"event": "on_phone", "where": {"duration_s": {"gte": 60}}},
            {"event": "withdrawal", "where": {"amount": {"gte": 200000}}},
        ]},
        "actions": {"sms": ["patrol"]},
    },
    {
        "rule": "second-larger-transfer", "version": 1, "severity": "critical", "cooldown": "10m",
        "when": {"within": "10m", "all": [
            {"event": "on_phone"},
            {"event": "transfer", "as": "first"},
            {"event": "transfer", "as": "second", "where": {"amount": {"gt": "first.amount"}}},
        ]},
        "actions": {"sms": ["patrol"], "hold": True},
    },
    {
        "rule": "long-call-no-money", "version": 1, "severity": "low", "cooldown": "15m",
        "when": {"within": "10m", "all": [
            {"event": "on_phone", "where": {"duration_s": {"gte": 300}}},
            {"event": "looking_around", "where": {"count": {"gte": 3}}},
        ], "none": [{"event": "transfer"}, {"event": "withdrawal"}]},
    },
]


@dataclass
class _Pack:
    rules: list[Any]
    digest: str = "bench"
    source: str = "generated"


def _load_pack(path: Path) -> _Pack:
    if path.is_dir() and any(path.glob("*.y*ml")):
        try:
            rs = load_rules([path])
            return _Pack(list(rs.rules), rs.digest, str(path))
        except Exception as exc:  # noqa: BLE001 - any unloadable pack: fall back to the generated one rather than fail the bench
            typer.echo(f"(could not load {path}: {exc}; using the generated pack)", err=True)
    return _Pack([Rule.model_validate(r) for r in FALLBACK_PACK])


@dataclass
class _Visit:
    atm: str
    start: float
    track: str
    durations: dict[str, float] = field(default_factory=dict)


def generate_events(n: int, atms: int, seed: int = 7) -> list[Any]:
    """A deterministic stream in event-time order: behaviour updates and bank events at `atms` ATMs."""
    rnd = random.Random(seed)
    out: list[Any] = []
    visits: dict[int, _Visit] = {}
    t = 0.0
    step = 0.02  # 50 events/s of event time over the whole network
    kinds = ["present"] * 30 + ["on_phone"] * 25 + ["looking_around"] * 15 + ["gaze_away"] * 10 + ["transfer"] * 12 + [
        "withdrawal"
    ] * 8
    for i in range(n):
        t += step
        a = rnd.randrange(atms)
        v = visits.get(a)
        if v is None or t - v.start > 900:
            v = visits[a] = _Visit(atm=f"ATM-{a:05d}", start=t, track=f"tr{i}")
        kind = rnd.choice(kinds)
        ts = T0 + timedelta(seconds=t)
        if kind in ("transfer", "withdrawal"):
            amount = rnd.choice([5_000, 50_000, 250_000, 400_000, 4_400_000])
            out.append(BankEvent(type=kind, id=f"b{i}", bank_id="bank-1", atm_id=v.atm,  # type: ignore[arg-type]
                                 ts=ts, amount=Decimal(amount), currency="KZT", payee_new=rnd.random() < 0.5, status="initiated"))
        else:
            dur = t - v.start
            out.append(BehaviorFact(id=f"f{i}", atm_id=v.atm, camera_id="cam-1", behavior=kind,  # type: ignore[arg-type]
                                    ts=ts,
                                    started_at=T0 + timedelta(seconds=v.start), duration_s=round(dur, 2),
                                    count=rnd.randrange(6) if kind == "looking_around" else None,
                                    confidence=0.9, track_id=v.track))
    return out


def _rss_mb() -> float:
    return float(psutil.Process().memory_info().rss / 2**20)


def _peak_rss_mb() -> float:
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def _in_child(fn: Any, *args: Any) -> Any:
    """Run one measurement in a fresh forked process; only its small result comes back."""
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        return pool.apply(fn, args)


def _durable_messages(pack: _Pack, events: list[Any]) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]:
    """The same events as durable messages for each compiled ruleset (built before timing)."""
    compiled = compile_rules(pack.rules)
    msgs: list[tuple[str, dict[str, Any]]] = []
    for i, ev in enumerate(events):
        name = _event_name(ev)
        for by, group in compiled.groups.items():
            key = _field_value(ev, by)
            if key is None or name not in group.events:
                continue
            m: dict[str, Any] = {"sid": str(zlib.crc32(str(key).encode()) % 128), "id": f"m{i}",
                                 "_i": f"m{i}", "_e": name, "_k": str(key), "_t": ev.ts.timestamp()}
            for f in group.fields_by_event.get(name, ()):
                v = _field_value(ev, f)
                if v is not None:
                    m[durable_field(f)] = _json_value(v)
            msgs.append((by, m))
    return {by: g.definition for by, g in compiled.groups.items()}, msgs


def _measure_engine(pack: _Pack, events: int, atms: int) -> dict[str, Any]:
    evs = generate_events(events, atms)
    eng = RuleEngine(pack)
    gc.collect()
    t, c = time.perf_counter(), time.process_time()
    fired = 0
    for ev in evs:
        fired += len(eng.feed(ev))
    return {"secs": time.perf_counter() - t, "cpu": time.process_time() - c, "fired": fired, **eng.stats()}


def baseline_durable_host(
    definitions: dict[str, Any], msgs: list[tuple[str, dict[str, Any]]]
) -> tuple[float, float, int]:
    """Baseline: durable's own Host API, same rulesets, no-op actions (wall s, CPU s, firings)."""

    class _Host(dengine.Host):  # type: ignore[misc]
        def _run(self) -> None:  # no background timer threads; we post from this thread
            return None

    fired = [0]

    def action(c: Any) -> None:
        fired[0] += 1

    host = _Host()
    names = {}
    for by, definition in definitions.items():
        d = copy.deepcopy(definition)
        for r in d.values():
            r["run"] = action
        names[by] = f"baseline-{by}-{time.monotonic_ns()}"
        host.set_rulesets({names[by]: d})
    gc.collect()
    t, c = time.perf_counter(), time.process_time()
    for by, m in msgs:
        with contextlib.suppress(dengine.MessageNotHandledException):
            host.assert_fact(names[by], m)
    return time.perf_counter() - t, time.process_time() - c, fired[0]


def baseline_durable_c(definitions: dict[str, Any], msgs: list[tuple[str, dict[str, Any]]]) -> tuple[float, float]:
    """Floor: bare C-level assert_fact + action drain of pre-encoded messages (wall s, CPU s)."""
    handles = {by: _dre.create_ruleset(f"cfloor-{by}-{time.monotonic_ns()}", json.dumps(d)) for by, d in definitions.items()}
    texts = [(handles[by], json.dumps(m)) for by, m in msgs]
    t, c = time.perf_counter(), time.process_time()
    for h, text in texts:
        _code, state = _dre.assert_fact(h, text)
        if _dre.start_action_for_state(h, state):
            while _dre.complete_and_start_action(h, state):
                pass
    return time.perf_counter() - t, time.process_time() - c


def _measure_host(pack: _Pack, events: int, atms: int) -> dict[str, Any]:
    definitions, msgs = _durable_messages(pack, generate_events(events, atms))
    secs, cpu, fired = baseline_durable_host(definitions, msgs)
    return {"secs": secs, "cpu": cpu, "fired": fired}


def _measure_c(pack: _Pack, events: int, atms: int) -> dict[str, Any]:
    definitions, msgs = _durable_messages(pack, generate_events(events, atms))
    secs, cpu = baseline_durable_c(definitions, msgs)
    return {"secs": secs, "cpu": cpu}


def _variants(pack: _Pack) -> list[_Pack]:
    """Two versions of the pack whose first rule differs in a real condition (new durable ruleset)."""
    out = []
    for k in range(2):
        rules = [Rule.model_validate(json.loads(r.model_dump_json(by_alias=True))) for r in pack.rules]
        pattern = rules[0].patterns()[0]
        pattern.where = {**pattern.where, "confidence": {"gte": 0.5 + 0.01 * k}}
        rules[0].version += 1 + k
        out.append(_Pack(rules, digest=f"v{k}"))
    return out


def _measure_reload(pack: _Pack, events: int, atms: int, reloads: int) -> dict[str, Any]:
    between = 500  # events fed between two reloads, so every reload has real changes to carry over
    evs = generate_events(events + (reloads + 2) * between, atms)
    eng = RuleEngine(pack)
    for ev in evs[:events]:
        eng.feed(ev)
    stats = eng.stats()
    variants = _variants(pack)
    new_defs: list[float] = []
    catch_up: list[float] = []
    for v in variants:  # definitions durable has never seen: new rulesets, every live event asserted
        t = time.perf_counter()
        eng.swap(v)
        new_defs.append(time.perf_counter() - t)
        t = time.perf_counter()
        for group in eng._groups.values():  # the durable work the first event of each shard would pay
            eng._sync_all(group)
        catch_up.append(time.perf_counter() - t)
    meta = _Pack([r.model_copy(update={"version": r.version + 10}) for r in variants[1].rules], digest="meta")
    t = time.perf_counter()
    eng.swap(meta)  # only versions change: the durable ruleset stays
    meta_secs = time.perf_counter() - t
    times: list[float] = []
    rss: list[float] = []
    pos = events
    for i in range(reloads):
        for ev in evs[pos:pos + between]:
            eng.feed(ev)
        pos += between
        t = time.perf_counter()
        eng.swap(variants[i % 2])  # back and forth: each durable ruleset is reused and brought up to date
        for group in eng._groups.values():
            eng._sync_all(group)  # counted in: the whole difference is applied before the clock stops
        times.append(time.perf_counter() - t)
        if i in (1, reloads // 2, reloads - 1):
            gc.collect()
            rss.append(_rss_mb())
    times.sort()
    return {**stats, "new": new_defs, "catch_up": catch_up, "meta": meta_secs, "median": times[len(times) // 2],
            "max": times[-1], "rss": rss, "after": eng.stats()}


def _measure_memory(pack: _Pack, n: int, atms: int) -> dict[str, Any]:
    eng = RuleEngine(pack)
    chunk = 50_000
    marks: list[tuple[int, float]] = []
    t = time.perf_counter()
    done, seed = 0, 100
    while done < n:
        size = min(chunk, n - done)
        evs = generate_events(size, atms, seed=seed)
        shift = timedelta(seconds=done * 0.02)  # continue event time where the last chunk ended
        for ev in evs:
            ev.ts = ev.ts + shift
            if isinstance(getattr(ev, "started_at", None), datetime):
                ev.started_at = ev.started_at + shift
            ev.id = f"{seed}-{ev.id}"
            eng.feed(ev)
        seed += 1
        done += size
        del evs
        marks.append((done, _rss_mb()))
    return {"secs": time.perf_counter() - t, "marks": marks, "peak": _peak_rss_mb(), **eng.stats()}


def _measure_stale(pack: _Pack, n: int, atms: int) -> dict[str, Any]:
    """`n` half-matches that never complete (a call on a new camera each time): swept, never piling up."""
    eng = RuleEngine(pack)
    marks: list[tuple[int, float]] = []
    t = time.perf_counter()
    for i in range(n):
        ts = T0 + timedelta(seconds=i * 0.02)
        eng.feed(BehaviorFact(id=f"s{i}", atm_id=f"ATM-{i % atms:05d}", camera_id=f"c{i}", behavior="on_phone",
                              ts=ts, started_at=ts, duration_s=400.0, confidence=0.9))
        if (i + 1) % (n // 10 or 1) == 0:
            marks.append((i + 1, _rss_mb()))
    return {"secs": time.perf_counter() - t, "marks": marks, **eng.stats()}


def bench_rules(*, events: int, atms: int, rules_dir: Path, memory_events: int, ten_million: bool, reloads: int) -> None:
    """Replay throughput vs durable_rules, peak RSS over long replays, reload time with live state."""
    pack = _load_pack(rules_dir)
    typer.echo(f"pack: {len(pack.rules)} rules from {pack.source}; {atms:,} ATMs; {events:,} events; one core each")
    c = _in_child(_measure_c, pack, events, atms)
    host = _in_child(_measure_host, pack, events, atms)
    eng = _in_child(_measure_engine, pack, events, atms)
    rates = {k: (events / d["cpu"], events / d["secs"]) for k, d in (("eng", eng), ("host", host), ("c", c))}
    (r_eng, w_eng), (r_host, w_host), (r_c, w_c) = rates["eng"], rates["host"], rates["c"]
    typer.echo("throughput  events per CPU-second of the one process (wall-clock rate in brackets; the machine is shared)")
    typer.echo(f"            atmguard RuleEngine.feed:      {r_eng:>9,.0f} ({w_eng:,.0f})  "
               f"{eng['fired']} interventions, {eng['keys']} keys live at the end")
    typer.echo(f"            durable Host.assert_fact:      {r_host:>9,.0f} ({w_host:,.0f})  {host['fired']} raw firings")
    typer.echo(f"            durable C assert_fact (floor): {r_c:>9,.0f} ({w_c:,.0f})")
    typer.echo(f"            RuleEngine / durable Host = {r_eng / r_host:.2f} (target >= 0.5); "
               f"RuleEngine / C floor = {r_eng / r_c:.2f}; "
               f">= 30,000 events/s: {'met' if r_eng >= 30_000 else 'NOT met'}")
    if reloads:
        rl = _in_child(_measure_reload, pack, events, atms, reloads)
        typer.echo(f"reload      live state {rl['keys']:,} keys / {rl['live_events']:,} events; "
                   f"to a new definition: swap {' / '.join(f'{x * 1000:.0f}' for x in rl['new'])} ms, then "
                   f"{' / '.join(f'{x * 1000:.0f}' for x in rl['catch_up'])} ms of durable catch-up spread over "
                   f"the first event of each shard; metadata only: {rl['meta'] * 1000:.1f} ms")
        typer.echo(f"            {reloads} reloads back and forth, 500 events fed between, catch-up included: median "
                   f"{rl['median'] * 1000:.0f} ms, max {rl['max'] * 1000:.0f} ms (target < 1000 ms); "
                   f"RSS after reload 2 / {reloads // 2} / {reloads}: " + " / ".join(f"{r:.0f} MB" for r in rl["rss"])
                   + f" (live events then: {rl['after']['live_events']:,})")
    if memory_events:
        st = _in_child(_measure_stale, pack, memory_events, atms)
        marks = st["marks"]
        typer.echo(f"stale       {memory_events:,} half-matches that never complete, swept by event time: RSS at "
                   + ", ".join(f"{d:,}: {r:.0f} MB" for d, r in (marks[0], marks[len(marks) // 2], marks[-1]))
                   + f"; live events at the end {st['live_events']:,}")
    for n in [memory_events] + ([10_000_000] if ten_million else []):
        if n:
            m = _in_child(_measure_memory, pack, n, atms)
            marks = m["marks"]
            picks = [marks[0], marks[len(marks) // 2], marks[-1]]
            typer.echo(f"memory      {n:,} events in {m['secs']:.0f} s (incl. generating them): peak RSS {m['peak']:.0f} MB; "
                       "RSS at " + ", ".join(f"{d:,}: {r:.0f} MB" for d, r in picks)
                       + f"; live events at the end {m['live_events']:,}")
