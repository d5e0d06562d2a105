"""`atmguard demo`: the Zhezkazgan scenario end to end on the embedded stack, as a readable timeline.

Everything real: the Tansu broker, the Faust engine with the repo's rules, the bank API (bank
events are signed and POSTed over HTTP), the notifier sending through the twilio SDK to the
local Twilio-compatible server (or to Twilio when credentials are configured), the signed CAD
webhook to a local receiver that checks its HMAC signature. The first behaviour facts come from
the detectors (MediaPipe) run on a real clip when the footage folder is there; the rest are the
scenario's recorded facts, published to the facts topic exactly as the detectors do. An officer's
"OK <code>" reply is played back through the local Twilio server to acknowledge one intervention;
another is left alone and escalates (the demo's copy of the deployment config escalates after
seconds, not minutes). Times are shifted so the scenario ends now; the timeline shows the
scenario's own clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from atmguard.apps.demo.watch import DemoWatcher, Timeline
from atmguard.core.contracts import BankEvent, BehaviorFact, Intervention, read_events
from atmguard.core.settings import Settings

log = logging.getLogger("atmguard.demo")

REPO = Path(__file__).resolve().parents[3]
EVENT_GAP_S = 0.06  # wall time between two published events: enough to read cause and effect in order
ESCALATION_STEP_S = 4.0  # the demo escalates an unacknowledged intervention after 4 s, 8 s, ... (config: minutes)


def _fact_line(f: BehaviorFact) -> str:
    extra = f" {f.count}x in {f.window_s:.0f}s" if f.count is not None and f.window_s else ""
    ended = ", ended" if f.ended else ""
    return f"{f.atm_id}  {f.behavior} for {f.duration_s:.0f}s{extra}{ended} (confidence {f.confidence:.2f}, {f.camera_id})"


def _bank_line(e: BankEvent) -> str:
    payee = " to a NEW payee" if e.payee_new else ""
    amount = f"{int(e.amount):,}".replace(",", " ")
    return f"{e.atm_id or '-'}  {e.type} {amount} {e.currency}{payee} ({e.bank_id}, {e.status})"


class BankClient:
    """Signs and POSTs bank events to the gateway, as a bank would."""

    def __init__(self, base_url: str, keys: dict[str, str]) -> None:
        import httpx

        self.http = httpx.AsyncClient(base_url=base_url, timeout=10.0)
        self.keys = keys

    async def post(self, event: BankEvent) -> tuple[int, dict[str, Any]]:
        body = event.to_json().encode()
        ts = str(int(time.time()))
        sig = hmac.new(self.keys[event.bank_id].encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
        resp = await self.http.post(
            "/v1/events",
            content=body,
            headers={
                "Content-Type": "application/json",
                "X-Atmguard-Bank": event.bank_id,
                "X-Atmguard-Timestamp": ts,
                "X-Atmguard-Signature": f"sha256={sig}",
            },
        )
        try:
            data = resp.json()
        except ValueError:
            data = {}
        return resp.status_code, data if isinstance(data, dict) else {"results": data}

    async def close(self) -> None:
        await self.http.aclose()


def _advice(data: dict[str, Any]) -> str:
    item = data
    for key in ("results", "events"):
        if isinstance(data.get(key), list) and data[key]:
            item = data[key][0]
    advice = item.get("advice", "?")
    if advice == "hold":
        return f"advice: HOLD ({item.get('intervention_id', '')}: {item.get('reason', '')})"
    return f"advice: {advice}"


async def _serve(api: Any, port: int) -> tuple[Any, asyncio.Task[Any], int]:
    import uvicorn

    from atmguard.apps.up import _leave_signals_to_us

    server = uvicorn.Server(uvicorn.Config(api, host="127.0.0.1", port=port, log_config=None, lifespan="on"))
    _leave_signals_to_us(server)
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 30
    while not server.started:
        if task.done() or time.monotonic() > deadline:
            raise RuntimeError("the bank API did not start")
        await asyncio.sleep(0.05)
    return server, task, port


async def _follow_interventions(bootstrap: str, topic: str, out: list[Intervention], stop: asyncio.Event,
                                timeline: Timeline) -> None:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, fetch_max_wait_ms=20)
    await consumer.start()
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=100)
            for records in batch.values():
                for r in records:
                    iv = Intervention.model_validate_json(r.value)
                    out.append(iv)
                    acts = [f"{k}: {', '.join(v)}" for k, v in (("sms", iv.actions.sms), ("radio", iv.actions.radio),
                                                                  ("webhook", iv.actions.webhook)) if v]
                    hold = ", hold" if iv.actions.hold else ""
                    todo = "; ".join(acts) or "no actions"
                    if iv.mode == "shadow":
                        todo = f"SHADOW mode: recorded, nobody notified ({todo})"
                    timeline.say(iv.ts, "RULE", f"{iv.rule} v{iv.rule_version} [{iv.severity}{hold}] fired -> "
                                 f"intervention {iv.id} ({iv.short_code}); {todo}")
                    timeline.say(None, "", f"        \"{iv.message}\"")
    finally:
        await consumer.stop()


async def run_demo(scenario: Path, data_dir: Path, *, verbose: bool = False, detectors: bool = True) -> int:
    from atmguard.apps.demo.config import write_demo_config
    from atmguard.apps.demo.detect import DEMO_CLIP, DetectorRun, detect_clip, footage_dir
    from atmguard.apps.demo.receiver import CadReceiver
    from atmguard.apps.publish import restamp
    from atmguard.apps.up import build_api, start_stack, stop_stack
    from atmguard.engine.faust_app import EngineOptions, load_ruleset

    rules_dir = scenario / "rules" if (scenario / "rules").is_dir() else REPO / "rules"
    config_dir = scenario / "configs" if (scenario / "configs").is_dir() else REPO / "configs"
    files = sorted(scenario.glob("*.jsonl"))
    recorded = read_events(files)
    if not recorded:
        print(f"no events in {scenario}", file=sys.stderr)
        return 1
    # shift the scenario so that it ends now (all events in the past, gaps kept)
    start = datetime.now(UTC) - (recorded[-1].ts - recorded[0].ts) - timedelta(seconds=5)
    events = restamp(recorded, start)
    delta = events[0].ts - recorded[0].ts
    from atmguard.kafka.broker import free_port

    # the detectors run on a real clip in a child process while the stack starts
    footage = footage_dir() if detectors else None
    first_fact = next((e for e in events if isinstance(e, BehaviorFact)), None)
    detecting: asyncio.Task[DetectorRun] | None = None
    if footage is not None and (footage / DEMO_CLIP).is_file() and first_fact is not None:
        detecting = asyncio.create_task(detect_clip(footage / DEMO_CLIP, atm_id=first_fact.atm_id,
                                                    camera_id=first_fact.camera_id, start_time=events[0].ts))

    # a local CAD receiver, and the demo's copy of the deployment config pointing at it
    receiver = CadReceiver({}).start()
    demo_cfg = write_demo_config(config_dir, data_dir / "demo-configs", receiver_url=f"http://127.0.0.1:{receiver.port}",
                                 step_s=ESCALATION_STEP_S)
    receiver.secrets = dict(demo_cfg.webhook_secrets)
    saved_env = {name: os.environ.get(name) for name in demo_cfg.secret_envs}
    os.environ.update(demo_cfg.secret_envs)  # per-run secrets, in this process only

    http_port = free_port()
    # the demo always runs its own embedded broker (broker=None), and Twilio status callbacks and
    # console links point at this demo's own bank API / console
    settings = Settings(data_dir=data_dir, rules_dir=rules_dir, config_dir=demo_cfg.config_dir, broker=None,
                        public_url=f"http://127.0.0.1:{http_port}")
    timeline = Timeline(delta=delta, tz=recorded[0].ts.tzinfo)
    n_rules = len(getattr(load_ruleset(rules_dir), "rules", []) or [])

    print(f"atmguard demo: {scenario.name}, {recorded[0].ts:%d %b %Y} ({_rel(scenario)}), on the embedded stack")
    options = EngineOptions(rules_dir=rules_dir, data_dir=data_dir, session_timeout_s=2.0, heartbeat_s=0.3,
                            watch_rules=False)
    stack = None
    server = serve_task = bank = None
    try:
        stack = await start_stack(settings, data_dir=data_dir, engine_options=options)
        twilio = (f"local Twilio-compatible server {stack.sink.base_url}" if stack.sink is not None
                  else "Twilio (credentials from the environment)")
        print(f"  broker    {stack.broker_url} (Tansu, in-memory)")
        print(f"  rules     {_rel(rules_dir)} ({n_rules} rules)   config {_rel(config_dir)}")
        print(f"  SMS/radio {twilio}")
        for name in demo_cfg.webhook_secrets:
            print(f"  webhook   {name}: local CAD receiver {receiver.url(name)}, checks the HMAC signature "
                  "(secret made for this run)")
        if demo_cfg.escalation_after:
            after = ", ".join(f"{s:g}s (config: {orig})" for orig, s in demo_cfg.escalation_after)
            print(f"  escalate  unacknowledged after {after}: the demo's copy of the config, "
                  f"{_rel(demo_cfg.config_dir / 'deployment.yaml')}")
        keys: dict[str, str] = {}
        try:
            api = build_api(stack)
            server, serve_task, port = await _serve(api, http_port)
            keys = _bank_keys(settings, {e.bank_id for e in events if isinstance(e, BankEvent)})
            bank = BankClient(f"http://127.0.0.1:{port}", keys)
            print(f"  bank      events signed and POSTed to the bank API http://127.0.0.1:{port}/v1/events")
        except Exception as exc:  # noqa: BLE001 - if the bank API cannot start (database, port), the demo publishes bank events directly
            log.warning("bank API unavailable (%s)", exc)
            print("  bank      bank API not available: bank events published straight to the bank topic")
        detected: list[BehaviorFact] = []
        clip = DEMO_CLIP
        if detecting is not None:
            run = await detecting
            detected, clip = run.facts, run.clip.name
            if run.error:
                print(f"  detectors {run.error}: recorded facts only")
            else:
                print(f"  detectors MediaPipe on real footage {run.clip} -> {len(run.facts)} facts, published first; "
                      f"the clip is only 5 s, so the rest of the scenario's facts are recorded")
        elif not detectors:
            print("  detectors skipped (--no-detectors): recorded facts only")
        else:
            print(f"  detectors footage folder not found (set ATMGUARD_FOOTAGE, or ../shared/footage/{DEMO_CLIP}): "
                  "recorded facts only")
        print(f"  facts     recorded behaviour facts from {', '.join(_rel(f) for f in files if 'fact' in f.name)}, "
              "published to the facts topic as the detectors publish them")
        deadline = time.monotonic() + 60
        while (stack.engine is None or stack.engine.restored == 0) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        print()
        print(" scenario    wall   what")
        timeline.t0 = time.monotonic()
        ivs: list[Intervention] = []
        stop = asyncio.Event()
        follower = asyncio.create_task(
            _follow_interventions(stack.bootstrap, settings.topic_interventions, ivs, stop, timeline))
        watcher = DemoWatcher(timeline, ivs, sink=stack.sink, notifier=stack.notifier, receiver=receiver,
                              escalation_after=[s for _, s in demo_cfg.escalation_after],
                              escalation_steps=demo_cfg.escalation_steps)
        sources: list[tuple[BehaviorFact | BankEvent, str]] = [(f, f"(detector: {clip}) ") for f in detected]
        sources += [(e, "") for e in events]
        for ev, label in sources:
            if isinstance(ev, BankEvent):
                if bank is not None:
                    code, data = await bank.post(ev)
                    verdict = f"-> HTTP {code}, {_advice(data)}" if code < 300 else f"-> HTTP {code} {data}"
                else:
                    await stack.publisher.publish(ev)
                    verdict = "-> published"
                timeline.say(ev.ts, "BANK", f"{_bank_line(ev)} {verdict}")
            else:
                await stack.publisher.publish(ev)
                if ev.behavior != "present":
                    timeline.say(ev.ts, "FACT", label + _fact_line(ev))
            await asyncio.sleep(EVENT_GAP_S)
            await watcher.poll()
        # let the last interventions reach the notifier, the acks land and the escalations run out
        quiet_since = time.monotonic()
        deadline = time.monotonic() + 30
        last = (len(ivs), watcher.sms, watcher.radio, watcher.webhooks)
        while time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            await watcher.poll()
            now = (len(ivs), watcher.sms, watcher.radio, watcher.webhooks)
            if now != last:
                last, quiet_since = now, time.monotonic()
            consumed = stack.engine.consumed if stack.engine is not None else 0
            if consumed >= len(sources) and ivs and watcher.settled() and time.monotonic() - quiet_since > 1.0:
                break
        stop.set()
        await follower
        print()
        rules_fired = sorted({iv.rule for iv in ivs})
        print(f"done: {len(sources)} events ({len(detected)} facts from the detectors) -> {len(ivs)} interventions "
              f"({', '.join(rules_fired) or 'none'}), {watcher.sms} SMS, {watcher.radio} radio calls, "
              f"{watcher.webhooks} signed webhook(s)")
        codes = {iv.id: iv.short_code for iv in ivs}
        for iv_id, by in watcher.acked.items():
            print(f"      {codes.get(iv_id, iv_id)} acknowledged by SMS reply from {by}")
        for iv_id, steps in watcher.escalated.items():
            print(f"      {codes.get(iv_id, iv_id)} escalated {steps} step(s): nobody acknowledged it")
        if stack.sink is not None:
            print("      (SMS and calls went to the local Twilio-compatible server; set ATMGUARD_TWILIO_ACCOUNT_SID, "
                  "ATMGUARD_TWILIO_AUTH_TOKEN and ATMGUARD_TWILIO_FROM to send real ones)")
        if not ivs:
            print("error: no intervention fired", file=sys.stderr)
            return 1
        return 0
    finally:
        if detecting is not None and not detecting.done():
            detecting.cancel()
            with contextlib.suppress(BaseException):
                await detecting
        if bank is not None:
            await bank.close()
        if server is not None and serve_task is not None:
            server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(serve_task, 5)
        if stack is not None:
            await stop_stack(stack, data_dir)
        receiver.stop()
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _bank_keys(settings: Any, bank_ids: set[str]) -> dict[str, str]:
    """A signing key per bank of the scenario (a fresh data dir: made here, like `atmguard banks add`)."""
    from atmguard.gateway.keys import BankKeys
    from atmguard.gateway.secrets import bank_master_secret
    from atmguard.store.db import make_engine, make_sessionmaker, migrate

    url = settings.resolved_database_url()
    migrate(url)
    keys = BankKeys(make_sessionmaker(make_engine(url)), bank_master_secret(settings))
    out: dict[str, str] = {}
    for bank_id in sorted(bank_ids):
        current = keys.current_key(bank_id)
        out[bank_id] = current if current else keys.add(bank_id, actor="demo")
    return out


def _rel(path: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    return str(path)


def main_demo(*, data_dir: Path | None, scenario: Path | None, verbose: bool = False, detectors: bool = True) -> int:
    """Entry point of `atmguard demo`."""
    from atmguard.apps.up import configure_logging

    configure_logging(verbose)
    if not verbose:  # the timeline says what happened; logs only for real trouble
        for name in ("", "atmguard", "alembic", "uvicorn", "uvicorn.error", "mode", "faust", "aiokafka", "kafka"):
            logging.getLogger(name).setLevel(logging.ERROR)
    scenario = scenario or REPO / "examples" / "zhezkazgan"
    if not scenario.is_dir():
        print(f"scenario folder {scenario} not found", file=sys.stderr)
        return 2
    if data_dir is None:
        with tempfile.TemporaryDirectory(prefix="atmguard-demo-") as tmp:
            return asyncio.run(run_demo(scenario, Path(tmp), verbose=verbose, detectors=detectors))
    data_dir.mkdir(parents=True, exist_ok=True)
    return asyncio.run(run_demo(scenario, data_dir, verbose=verbose, detectors=detectors))
