"""`atmguard banks ...` and `atmguard users add` as an operator runs them."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from atmguard.apps.cli import app
from atmguard.gateway.auth import sign_headers, verify

runner = CliRunner()


def run(*args: str, input: str | None = None) -> str:
    result = runner.invoke(app, list(args), input=input)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_bank_keys_add_rotate_revoke_list(tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path)]
    key1 = run("banks", "add", "halyk", *data).strip().splitlines()[0]
    assert len(key1) == 64
    bad = runner.invoke(app, ["banks", "add", "halyk", *data])
    assert bad.exit_code == 1 and "already exists" in bad.output
    key2 = run("banks", "rotate", "halyk", *data).strip().splitlines()[0]
    assert key2 != key1
    listing = run("banks", "list", *data)
    assert listing.count("halyk") == 2 and "current" in listing and "old" in listing
    assert key1 not in listing and key2 not in listing
    # the database never holds a key
    db = (tmp_path / "atmguard.db").read_bytes()
    assert key1.encode() not in db and key2.encode() not in db
    assert "revoked 1 old key" in run("banks", "revoke-old", "halyk", *data)
    assert "revoked" in run("banks", "list", *data)
    unknown = runner.invoke(app, ["banks", "rotate", "nobank", *data])
    assert unknown.exit_code == 1 and "unknown bank" in unknown.output


def test_key_from_the_cli_signs_requests_the_gateway_accepts(tmp_path: Path) -> None:
    from atmguard.core.settings import Settings
    from atmguard.gateway.keys import BankKeys
    from atmguard.gateway.secrets import bank_master_secret
    from atmguard.store.db import make_engine, make_sessionmaker

    key = run("banks", "add", "kaspi", "--data-dir", str(tmp_path)).strip().splitlines()[0]
    settings = Settings(data_dir=tmp_path)
    keys = BankKeys(make_sessionmaker(make_engine(settings.resolved_database_url())), bank_master_secret(settings))
    body = b'{"x": 1}'
    h = sign_headers("kaspi", key, body)
    verify(keys.valid_keys("kaspi"), h["X-Atmguard-Timestamp"], h["X-Atmguard-Signature"], body, skew_s=300)


def test_users_add_with_password_on_stdin(tmp_path: Path) -> None:
    out = run("users", "add", "dina", "--role", "dispatcher", "--password-stdin", "--data-dir", str(tmp_path), input="s3cret-pass\n")
    assert "dina (dispatcher)" in out
    bad = runner.invoke(app, ["users", "add", "x", "--role", "boss", "--password-stdin", "--data-dir", str(tmp_path)], input="s3cret-pass\n")
    assert bad.exit_code == 1 and "dispatcher, supervisor, rule_author" in bad.output
    assert b"s3cret-pass" not in (tmp_path / "atmguard.db").read_bytes()


def test_cases_export_labels_command(tmp_path: Path) -> None:
    from atmguard.core.settings import Settings
    from atmguard.gateway.casebook import CaseBook
    from atmguard.store.db import make_engine, make_sessionmaker, migrate
    from tests.gateway.test_store import intervention

    url = Settings(data_dir=tmp_path).resolved_database_url()
    migrate(url)
    book = CaseBook(make_sessionmaker(make_engine(url)))
    book.record(intervention(1))
    book.close("iv-0001", "real_scam_stopped", "sam")
    out = tmp_path / "labels.jsonl"
    assert "wrote 1 label(s)" in run("cases", "export-labels", str(out), "--data-dir", str(tmp_path))
    assert '"events": ["f-1", "trx-1"]' in out.read_text()
