"""Each durable_rules quirk of ../shared/NOTES.md, shown handled by RuleEngine on the real engine."""

from __future__ import annotations

import ast
import gc
import re
import subprocess
import sys
import threading
import zlib
from datetime import timedelta
from pathlib import Path

import psutil
import pytest

from atmguard.core.errors import RuleError
from atmguard.rules.compiler import CompiledGroup
from atmguard.rules.runtime import RuleEngine, fnv1a32
from atmguard.rules.schema import Rule
from tests.rules.test_runtime import COACHED, SECOND, T0, Pack, engine, fact, fired, rule, transfer

ATMS = 10_000


def test_ten_thousand_atms_live_at_once() -> None:
    """durable allows 1024 live sessions per ruleset; keys are sharded, so 10,000 ATMs all work."""
    call_then_transfer = """
rule: call-then-transfer
version: 1
severity: high
when:
  all:
    - event: on_phone
    - event: transfer
  within: 5m
"""
    eng = engine(call_then_transfer)
    for i in range(ATMS):
        eng.feed(fact("on_phone", 70, atm=f"ATM-{i:05d}", id=f"p{i}"))
    assert len(eng.keys()) == ATMS
    got = [iv for i in range(ATMS) for iv in eng.feed(transfer(90, 400000, atm=f"ATM-{i:05d}", id=f"t{i}"))]
    assert len(got) == ATMS
    assert all(iv.atm_id == f"ATM-{i:05d}" and iv.evidence == [f"p{i}", f"t{i}"] for i, iv in enumerate(got))


def test_colliding_event_ids_are_both_kept() -> None:
    """`trx-122789` and `trx-339192` have the same 32-bit FNV hash in durable."""
    assert fnv1a32("trx-122789") == fnv1a32("trx-339192")
    eng = engine(SECOND)
    eng.feed(fact("on_phone", 10))
    assert fired(eng, transfer(20, 400_000, id="trx-122789")) == []
    [iv] = eng.feed(transfer(30, 4_400_000, id="trx-339192"))  # not rejected as "already observed"
    assert iv.evidence[1:] == ["trx-122789", "trx-339192"]
    # retracting one (sweep) must not retract the other
    eng2 = engine(SECOND)
    assert fired(eng2, transfer(0, 100, id="trx-122789"), transfer(700, 50, id="trx-339192"), fact("on_phone", 701)) == []
    assert eng2.sweep(T0 + timedelta(seconds=650)) == 1  # only the first is older than 10 min
    assert fired(eng2, transfer(702, 60)) == [("second-larger-transfer", "ATM-1")]


def test_internal_ids_skip_hashes_already_live() -> None:
    eng = engine(SECOND)
    group = next(iter(eng._groups.values()))
    shard_i = zlib.crc32(b"ATM-1") % 128
    shard = group.state.shards[shard_i]
    nxt = format(group.state.counter + 1, "x")
    shard.hashes.add(fnv1a32(nxt))  # pretend a live message of this session already hashes like the next id
    live = eng._new_live(group, transfer(0, 1), 0.0, "ATM-1", None, "transfer", shard_i)
    assert live.iid != nxt and fnv1a32(live.iid) in shard.hashes and len(shard.hashes) == 3


def test_durable_refusal_becomes_rule_error() -> None:
    bad = CompiledGroup(by="atm_id", rules=[], fields=frozenset(),
                        definition={"r": {"all": [{"m": {"$mt": {"s": "(("}}}]}})
    eng = engine(COACHED)
    with pytest.raises(RuleError, match="durable_rules"):
        eng._acquire(bad, eng._new_state())


def test_unknown_operator_is_rejected_not_silently_accepted() -> None:
    with pytest.raises(RuleError, match="unknown operator 'neq'"):
        engine(COACHED.replace("count: {gte: 3}", "count: {neq: 3}"))


def test_swap_carries_state_and_is_atomic() -> None:
    eng = engine(COACHED)
    eng.feed(fact("on_phone", 70))
    eng.feed(fact("looking_around", 80, count=4))
    # version 2 changes the threshold: a new durable ruleset, live events re-asserted
    v2 = rule(COACHED, version=2)
    v2.when.all[2].where["amount"] = {"gte": 100_000}  # type: ignore[index,union-attr]
    eng.swap(Pack([v2], digest="v2"))
    assert eng.digest == "v2"
    [iv] = eng.feed(transfer(90, 200_000))
    assert iv.rule_version == 2 and iv.evidence[0].startswith("on_phone")
    # a bad new rule set: RuleError, and the engine keeps the old rules and state
    broken = rule(COACHED.replace("count: {gte: 3}", "count: {bogus: 3}"), rule="broken")
    with pytest.raises(RuleError):
        eng.swap(Pack([v2, broken], digest="bad"))
    assert eng.digest == "v2" and eng.export_state("ATM-1").cooldowns
    assert fired(eng, fact("on_phone", 70, atm="A2"), fact("looking_around", 80, atm="A2", count=4),
                 transfer(90, 200_000, atm="A2")) == [("coached-transfer", "A2")]


def test_swap_back_reuses_ruleset_and_syncs_only_the_difference() -> None:
    """Rollback A -> B -> A: A's durable ruleset still holds old facts; they must match the state."""
    a = rule(COACHED)
    b = rule(COACHED, version=2)
    b.when.all[2].where["amount"] = {"gte": 100_000}  # type: ignore[index,union-attr]
    eng = RuleEngine(Pack([a]))
    eng.feed(fact("on_phone", 70, id="call-1"))
    eng.feed(fact("looking_around", 80, count=4, id="look-1"))
    handle_a = next(iter(eng._groups.values())).handle
    eng.swap(Pack([b]))
    # while B runs: the call is superseded by a newer update, another ATM starts a call
    eng.feed(fact("on_phone", 100, id="call-2"))
    eng.feed(fact("on_phone", 100, atm="A2", id="a2-call"))
    eng.feed(fact("looking_around", 101, atm="A2", count=3, id="a2-look"))
    eng.swap(Pack([a]))
    assert next(iter(eng._groups.values())).handle == handle_a  # reused, not a new durable ruleset
    [iv] = eng.feed(transfer(120, 400_000))
    assert iv.evidence == ["call-2", "look-1", iv.evidence[2]]  # the superseded call-1 is gone from A
    assert fired(eng, transfer(121, 400_000, atm="A2")) == [("coached-transfer", "A2")]  # events fed under B count
    assert fired(eng, transfer(122, 200_000, atm="A3")) == []  # A's threshold again


def test_swap_keeps_durable_ruleset_when_only_metadata_changes() -> None:
    eng = engine(COACHED)
    eng.feed(fact("on_phone", 70))
    handle = next(iter(eng._groups.values())).handle
    eng.swap(Pack([rule(COACHED, version=3, message="v3 {atm_id}", severity="high")]))
    assert next(iter(eng._groups.values())).handle == handle
    eng.feed(fact("looking_around", 80, count=4))
    [iv] = eng.feed(transfer(90, 400000))
    assert (iv.rule_version, iv.severity, iv.message) == (3, "high", "v3 ATM-1")


def test_swap_to_new_correlation_key() -> None:
    by_payee = """
rule: same-payee-two-atms
version: 1
severity: high
when:
  all:
    - event: transfer
      as: a
    - event: transfer
      where: {atm_id: {ne: a.atm_id}}
  within: 1h
  by: payee_ref
message: "{a.atm_id} and {transfer.atm_id} -> {key}"
"""
    eng = engine(COACHED)
    eng.feed(transfer(10, 5, atm="A1", payee_ref="p-77"))
    eng.swap(Pack([rule(COACHED), rule(by_payee)]))
    [iv] = eng.feed(transfer(20, 5, atm="A2", payee_ref="p-77"))
    assert iv.key == "p-77" and iv.message == "A1 and A2 -> p-77" and iv.atm_id == "A1"
    assert eng.keys() == ["A1", "A2", "payee_ref=p-77"]


def test_stale_half_matches_swept_memory_bounded() -> None:
    """Half-matches never expire in durable; sweeping by event time keeps memory flat."""
    eng = engine(COACHED, SECOND, auto_sweep_every=0)
    proc = psutil.Process()
    rss: list[int] = []
    n = 0
    for rnd in range(5):
        for i in range(10_000):  # each a half-match that will never complete
            n += 1
            eng.feed(fact("on_phone", rnd * 3600 + i * 0.01, atm=f"A{i % 2000}", camera=f"c{n}", id=f"h{n}"))
        assert eng.sweep(T0 + timedelta(seconds=rnd * 3600 + 1800)) == 10_000
        gc.collect()
        rss.append(proc.memory_info().rss)
    assert eng.keys() == []
    # after warm-up, five rounds of 10,000 stale half-matches leave memory flat (generous bound)
    assert rss[-1] - rss[1] < 40 * 2**20, [r // 2**20 for r in rss]


def test_feed_sweeps_by_itself() -> None:
    eng = engine(COACHED, auto_sweep_every=100)
    for i in range(1000):
        eng.feed(fact("on_phone", i * 60, camera=f"c{i}", id=f"x{i}"))
    # only the 5 min window plus 2 min of allowed lateness are kept (one call a minute), never the stream
    assert 5 <= len(eng.export_state("ATM-1").events) <= 8


def _durable_modules_after(code: str) -> list[str]:
    """The durable modules loaded once `code` has run in a fresh interpreter."""
    probe = code + "\nimport sys\nprint(sorted(m for m in sys.modules if m.split('.')[0] in DURABLE))"
    out = subprocess.run([sys.executable, "-c", f"DURABLE = {DURABLE!r}\n{probe}"], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[2])
    return list(ast.literal_eval(out.stdout.strip().splitlines()[-1]))


DURABLE = ("durable", "durable_rules_engine")


def test_checking_and_loading_rules_does_not_load_durable() -> None:
    """Only running rules needs durable's C engine: not the rule language, nor a notifier config."""
    modules = ["atmguard.rules", "atmguard.rules.schema", "atmguard.rules.loader", "atmguard.rules.checks",
               "atmguard.rules.compiler", "atmguard.rules.ruleset", "atmguard.notifier.config"]
    assert _durable_modules_after("\n".join(f"import {m}" for m in modules)) == []
    # the same probe sees durable once the engine is asked for through the package
    got = _durable_modules_after("from atmguard.rules import RuleEngine\nassert RuleEngine.__module__ == 'atmguard.rules.runtime'")
    assert "durable_rules_engine" in got


def test_only_runtime_imports_durable() -> None:
    root = Path(__file__).resolve().parents[2] / "atmguard"
    offenders = [
        str(p.relative_to(root)) for p in root.rglob("*.py")
        if re.search(r"^\s*(import|from)\s+durable|import_module\(\s*[\'\"]durable", p.read_text(encoding="utf-8"), re.M)
    ]
    assert offenders == ["rules/runtime.py"]


REGEXES = [r"KZ.", r"^acc-\d{3}$", r"^[A-Z]{3}$", r"(kaspi|halyk)", r"x+y?z", r"[^0-9]+$", r"\w+@\w+\.kz",
           r"(?i)^kzt", r"a{2,}", r"^\s*$", r"[a-c.-]"]
SAMPLES = ["KZT", "kzt", "acc-123", "acc-1234", "xacc-123", "USD", "kaspi", "bank halyk", "xz", "xyz", "xxyzz",
           "abc", "123", "a1", "me@bank.kz", "me@bank_kz", "aa", "a", "   ", "", ".", "-", "d"]


@pytest.mark.parametrize("pattern", REGEXES)
def test_matches_behaves_like_python_regex_search(pattern: str) -> None:
    eng = RuleEngine(Pack([Rule.model_validate({
        "rule": "rx", "version": 1, "severity": "low",
        "when": {"all": [{"event": "transfer", "where": {"payee_ref": {"matches": pattern}}}]},
    })]))
    for i, sample in enumerate(SAMPLES):
        got = bool(eng.feed(transfer(0, 1, atm=f"A{i}", payee_ref=sample)))
        assert got == bool(re.search(pattern, sample)), (pattern, sample)


def test_calls_from_several_threads_lose_nothing() -> None:
    """durable loses actions when posted from several threads; the engine serializes its callers."""
    eng = engine(COACHED)
    got: list[str] = []

    def worker(part: int) -> None:
        for i in range(part * 500, part * 500 + 500):
            atm = f"T{i}"
            eng.feed(fact("on_phone", 70, atm=atm, id=f"p{i}"))
            eng.feed(fact("looking_around", 80, atm=atm, count=3, id=f"l{i}"))
            got.extend(iv.atm_id for iv in eng.feed(transfer(90, 400000, atm=atm, id=f"t{i}")))

    threads = [threading.Thread(target=worker, args=(p,)) for p in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(got) == sorted(f"T{i}" for i in range(2000))


def test_reload_syncs_each_shard_before_it_is_used() -> None:
    """After a reload the new durable ruleset is filled shard by shard; no event may miss its partners."""
    a = rule(COACHED)
    b = rule(COACHED, version=2)
    b.when.all[0].where["confidence"] = {"gte": 0.5}  # type: ignore[index,union-attr]
    eng = RuleEngine(Pack([a]), shards=8)
    for i in range(200):
        eng.feed(fact("on_phone", 70, atm=f"R{i}", id=f"p{i}"))
        eng.feed(fact("looking_around", 80, atm=f"R{i}", count=3, id=f"l{i}"))
    eng.swap(Pack([b]))
    assert eng.stats()["shards_to_sync"] == 8
    got = fired(eng, *(transfer(90, 400000, atm=f"R{i}", id=f"t{i}") for i in range(0, 200, 2)))
    assert got == [("coached-transfer", f"R{i}") for i in range(0, 200, 2)]
    eng.sweep(T0 + timedelta(seconds=100))  # a maintenance point: finishes the catch-up
    assert eng.stats()["shards_to_sync"] == 0
    assert fired(eng, *(transfer(91, 400000, atm=f"R{i}", id=f"u{i}") for i in range(1, 200, 2))) == [
        ("coached-transfer", f"R{i}") for i in range(1, 200, 2)
    ]
