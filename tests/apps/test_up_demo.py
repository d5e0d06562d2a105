"""`atmguard up` and `atmguard demo` as a user runs them (subprocesses, real everything)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from atmguard.kafka.broker import free_port
from tests.conftest import FOOTAGE, REPO
from tests.streamkit import ATMGUARD, fact, transfer

pytestmark = pytest.mark.slow


def test_demo_runs_the_zhezkazgan_scenario_end_to_end(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATMGUARD_")}
    out = subprocess.run([str(ATMGUARD), "demo", "--data-dir", str(tmp_path / "demo")], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=150)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = out.stdout
    # the bank events went through the bank API, the first transfer is advised to be held
    assert re.search(r"14:04:25 .*BANK .*transfer 400 000 KZT .*HTTP 202, advice: HOLD", text), text
    assert re.search(r"14:04:25 .*RULE +coached-transfer v1 \[critical, hold\] fired", text), text
    assert re.search(r"14:07:50 .*RULE +second-larger-transfer", text), text
    assert re.search(r"SMS +to \+7701\*+\d+: ATMGUARD", text), text  # masked numbers
    assert re.search(r"RADIO +call to radio gateway", text), text
    assert "recorded behaviour facts" in text
    assert "+77015550101" not in text
    # the CAD webhook reached the demo's local receiver, which checked its HMAC signature
    assert re.search(r"WEBHOOK +CAD receiver \(cad\) got intervention iv-\w+ \(\w{4}, long-call-no-money\): "
                     r"signature verified", text), text
    assert "dead letter" not in out.stderr + text
    # an officer acknowledged coached-transfer by SMS reply; second-larger-transfer escalated
    fired = re.search(r"coached-transfer v1 .*\((\w{4})\); sms: patrol", text)
    assert fired, text
    code = fired.group(1)
    assert re.search(rf"ACK +{code} \(coached-transfer\) acknowledged: \+7701\*+\d+ replied \"OK {code}\" by SMS", text), text
    assert not re.search(rf"ESCALATE +{code} ", text), text
    esc = re.search(r"ESCALATE +(\w{4}) \(second-larger-transfer\) unacknowledged 4s .*step 1 -> sms: patrol_reserve", text)
    assert esc, text
    after = text[esc.end():]  # the escalation reached the next group: an SMS and a radio call after it
    assert re.search(r"SMS +to \+7701\*+\d+: ATMGUARD", after) and re.search(r"RADIO +call to radio gateway", after), text
    # the first facts came from the detectors on the real clip (when the footage is there)
    if FOOTAGE.is_dir():
        assert re.search(r"FACT +\(detector: a_suzie_landline_phone_at_ear\.mp4\) atm-zhez-001 +on_phone for \d+s", text), text
        assert "the clip is only 5 s" in text
    else:
        assert "footage folder not found" in text


def test_up_serves_metrics_and_the_bank_api_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATMGUARD_")}
    env.update({"ATMGUARD_ENGINE_SESSION_TIMEOUT_S": "2", "ATMGUARD_ENGINE_HEARTBEAT_S": "0.3"})
    log = (tmp_path / "up.log").open("wb")
    proc = subprocess.Popen(
        [str(ATMGUARD), "up", "--http-port", str(port), "--data-dir", str(tmp_path / "data"),
         "--rules", str(REPO / "rules"), "--config", str(REPO / "configs")],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        ready = False
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(base + "/healthz/engine", timeout=1).status_code == 200:
                    ready = True
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        assert ready, (tmp_path / "up.log").read_text()[-3000:]
        broker_url = (tmp_path / "data" / "run" / "broker.url").read_text().strip()
        # `atmguard publish` finds the running stack's broker by itself
        events = tmp_path / "events.jsonl"
        events.write_text(fact("atm-zhez-001", 0, duration=90).to_json() + "\n" +
                          transfer("atm-zhez-001", 5).to_json() + "\n", encoding="utf-8")
        pub = subprocess.run([str(ATMGUARD), "publish", str(events)], env={**env, "ATMGUARD_DATA_DIR": str(tmp_path / "data")},
                             capture_output=True, text=True, timeout=60)
        assert pub.returncode == 0 and broker_url in pub.stdout, pub.stderr
        deadline = time.monotonic() + 20
        body = ""
        while time.monotonic() < deadline:
            body = httpx.get(base + "/metrics", timeout=5).text
            if 'atmguard_events_in_total{topic="atmguard.bank",type="transfer"} 1.0' in body:
                break
            time.sleep(0.2)
        assert 'atmguard_events_in_total{topic="atmguard.bank",type="transfer"} 1.0' in body
        assert "atmguard_processing_lag_seconds" in body and "atmguard_rule_reload_failures_total" in body
        assert httpx.get(base + "/openapi.json", timeout=5).status_code == 200  # the bank API is on the same port
        started = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole foreground process group
        assert proc.wait(20) == 0
        assert time.monotonic() - started < 10
        assert not (tmp_path / "data" / "run" / "broker.url").exists()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        log.close()
