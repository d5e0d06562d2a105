"""The notifier's commands as a dispatcher or operator types them."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, inspect
from typer.testing import CliRunner

from atmguard.apps.cli import app
from atmguard.notifier.db import migrate_notifier

from .conftest import CONFIGS

runner = CliRunner()


def test_notify_check_summarises_a_good_config():
    result = runner.invoke(app, ["notify", "check", "--config-dir", str(CONFIGS)])
    assert result.exit_code == 0, result.output
    assert "ok: 7 ATMs in 4 districts, 8 people" in result.output


def test_notify_check_points_at_a_bad_number(tmp_path: Path):
    text = (CONFIGS / "deployment.yaml").read_text(encoding="utf-8").replace('"+77015550200"', '"+7701555020"')
    (tmp_path / "deployment.yaml").write_text(text, encoding="utf-8")
    result = runner.invoke(app, ["notify", "check", "--config-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert f"{tmp_path / 'deployment.yaml'}:" in result.output and "people.desk-zhez.phone" in result.output


def test_commands_have_help():
    for args in (["twilio-sink", "--help"], ["bench", "notifier", "--help"], ["notify", "ack", "--help"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0 and "Usage" in result.output
    assert "--port" in runner.invoke(app, ["twilio-sink", "--help"]).output


def test_notifier_migration_is_its_own_alembic_branch(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'm.db'}"
    migrate_notifier(url)
    migrate_notifier(url)  # idempotent
    tables = set(inspect(create_engine(url)).get_table_names())
    assert {"notifier_interventions", "notifier_notifications", "notifier_acks", "notifier_escalations"} <= tables


def test_notify_ack_from_the_command_line(tmp_path: Path, monkeypatch):
    import asyncio

    from atmguard.apps.twilio_sink import TwilioSink
    from atmguard.core.settings import Settings, get_settings
    from atmguard.notifier.config import load_deployment
    from atmguard.notifier.service import NotifierService

    from .conftest import make_iv

    url = f"sqlite:///{tmp_path / 'cli.db'}"
    iv = make_iv(sms=("dispatch",))
    with TwilioSink() as sink:
        svc = NotifierService(Settings(twilio_base_url=sink.base_url), load_deployment(CONFIGS), url, tick_s=None)

        async def go() -> None:
            await svc.start()
            await svc.handle(iv)
            await svc.stop()

        asyncio.run(go())
    monkeypatch.setenv("ATMGUARD_DATABASE_URL", url)
    monkeypatch.setenv("ATMGUARD_CONFIG_DIR", str(CONFIGS))
    get_settings.cache_clear()
    try:
        result = runner.invoke(app, ["notify", "ack", iv.id, "--by", "dispatcher-1"])
        assert result.exit_code == 0, result.output
        assert f"{iv.id}: acknowledged (state acknowledged)" in result.output
        again = runner.invoke(app, ["notify", "ack", iv.id, "--by", "dispatcher-1"])
        assert "not changed" in again.output
    finally:
        get_settings.cache_clear()


def test_twilio_sink_command_serves_the_sdk(tmp_path: Path):
    import os
    import subprocess
    import sys

    import httpx

    from atmguard.core.settings import Settings
    from atmguard.notifier.twilio_client import make_twilio_client

    env = {k: v for k, v in os.environ.items() if not k.startswith("ATMGUARD_")}
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "atmguard"), "twilio-sink", "--port", "0", "--no-auto-status"],
        stdout=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("twilio-sink listening on http://127.0.0.1:")
        base = line.rsplit(" ", 1)[1].strip()
        client = make_twilio_client(Settings(twilio_base_url=base), timeout=5)
        msg = client.messages.create(to="+77015550101", from_="+77102000100", body="test")
        assert msg.sid.startswith("SM") and msg.status == "queued"
        [row] = httpx.get(f"{base}/_sink/requests").json()
        assert row["to"] == "+77015550101" and row["body"] == "test" and row["sid"] == msg.sid
    finally:
        proc.terminate()
        proc.wait(timeout=10)
