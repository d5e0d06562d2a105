"""Commands of the gateway part, registered on the main `atmguard` app.

    atmguard banks add BANK_ID [--webhook URL]   make a bank and print its key once
    atmguard banks rotate BANK_ID                new key; the old one stays valid until revoke-old
    atmguard banks revoke-old BANK_ID            revoke every key but the newest
    atmguard banks list                          banks, key fingerprints and states
    atmguard banks webhook BANK_ID URL           where intervention notices go ('' to remove)
    atmguard users add NAME --role ROLE          console user; password prompted or --password-stdin
    atmguard cases export-labels OUT             replay labels from closed cases
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

DATA_DIR = typer.Option(None, "--data-dir", help="Data directory (case store, secrets); default: ATMGUARD_DATA_DIR or ~/.local/share/atmguard.")
DB_URL = typer.Option(None, "--database-url", help="SQLAlchemy URL of the case store; default: SQLite in the data dir.")


def _settings(data_dir: Path | None, database_url: str | None) -> Any:
    from atmguard.core.settings import Settings

    overrides: dict[str, Any] = {}
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    if database_url is not None:
        overrides["database_url"] = database_url
    return Settings(**overrides)


def _sessions(settings: Any) -> Any:
    from atmguard.store.db import make_engine, make_sessionmaker, migrate

    url = settings.resolved_database_url()
    migrate(url)
    return make_sessionmaker(make_engine(url))


def _keys(data_dir: Path | None, database_url: str | None) -> Any:
    from atmguard.gateway.keys import BankKeys
    from atmguard.gateway.secrets import bank_master_secret

    settings = _settings(data_dir, database_url)
    return BankKeys(_sessions(settings), bank_master_secret(settings))


def _fail(exc: Exception) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add this part's commands to the CLI."""
    banks = typer.Typer(help="Banks allowed to post events, and their signing keys.", no_args_is_help=True)
    users = typer.Typer(help="Console users (dispatcher, supervisor, rule_author).", no_args_is_help=True)
    cases = typer.Typer(help="The case store: closed cases as replay labels.", no_args_is_help=True)
    app.add_typer(banks, name="banks")
    app.add_typer(users, name="users")
    app.add_typer(cases, name="cases")

    @banks.command("add")
    def banks_add(
        bank_id: str = typer.Argument(..., help="The bank's id, as in X-Atmguard-Bank and bank_id."),
        webhook: str | None = typer.Option(None, "--webhook", help="URL for signed intervention notices."),
        data_dir: Path | None = DATA_DIR,
        database_url: str | None = DB_URL,
    ) -> None:
        """Register a bank and print its signing key (shown only this once)."""
        from atmguard.gateway.keys import BankKeyError, fingerprint

        try:
            key = _keys(data_dir, database_url).add(bank_id, webhook_url=webhook)
        except BankKeyError as exc:
            _fail(exc)
        typer.echo(key)
        typer.echo(f"bank {bank_id} added (key {fingerprint(key)}); store the key now, it is not shown again", err=True)

    @banks.command("rotate")
    def banks_rotate(bank_id: str, data_dir: Path | None = DATA_DIR, database_url: str | None = DB_URL) -> None:
        """Make a new key; the previous one stays valid until `atmguard banks revoke-old`."""
        from atmguard.gateway.keys import BankKeyError, fingerprint

        try:
            key = _keys(data_dir, database_url).rotate(bank_id)
        except BankKeyError as exc:
            _fail(exc)
        typer.echo(key)
        typer.echo(f"new key {fingerprint(key)} for {bank_id}; the old key works until `atmguard banks revoke-old {bank_id}`", err=True)

    @banks.command("revoke-old")
    def banks_revoke_old(bank_id: str, data_dir: Path | None = DATA_DIR, database_url: str | None = DB_URL) -> None:
        """Revoke every key of the bank except the newest."""
        from atmguard.gateway.keys import BankKeyError

        try:
            n = _keys(data_dir, database_url).revoke_old(bank_id)
        except BankKeyError as exc:
            _fail(exc)
        typer.echo(f"revoked {n} old key(s) of {bank_id}")

    @banks.command("list")
    def banks_list(data_dir: Path | None = DATA_DIR, database_url: str | None = DB_URL) -> None:
        """Banks with their keys' fingerprints and states (never the keys)."""
        keys = _keys(data_dir, database_url)
        hooks = keys.webhooks()
        for k in keys.all_keys():
            hook = f"  webhook={hooks[k.bank_id]}" if k.bank_id in hooks else ""
            typer.echo(f"{k.bank_id}\t{k.fingerprint}\t{k.status}\t{k.created_at:%Y-%m-%d %H:%M}{hook}")

    @banks.command("webhook")
    def banks_webhook(
        bank_id: str, url: str = typer.Argument(..., help="https URL; '' removes it"),
        data_dir: Path | None = DATA_DIR, database_url: str | None = DB_URL,
    ) -> None:
        """Set where the bank receives signed intervention open/close notices."""
        from atmguard.gateway.keys import BankKeyError

        try:
            _keys(data_dir, database_url).set_webhook(bank_id, url or None)
        except BankKeyError as exc:
            _fail(exc)
        typer.echo(f"webhook of {bank_id}: {url or 'none'}")

    @users.command("add")
    def users_add(
        name: str,
        role: str = typer.Option(..., "--role", help="dispatcher, supervisor or rule_author"),
        password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from standard input."),
        data_dir: Path | None = DATA_DIR,
        database_url: str | None = DB_URL,
    ) -> None:
        """Create a console user (or reset its password and role)."""
        from atmguard.gateway.users import UserError, add_user

        if password_stdin:
            password = sys.stdin.readline().rstrip("\r\n")
        else:
            password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
        try:
            add_user(_sessions(_settings(data_dir, database_url)), name, role, password)
        except UserError as exc:
            _fail(exc)
        typer.echo(f"user {name} ({role}) saved")

    @cases.command("export-labels")
    def cases_export_labels(
        out: Path = typer.Argument(..., help="JSONL file to write."),
        data_dir: Path | None = DATA_DIR,
        database_url: str | None = DB_URL,
    ) -> None:
        """Write replay labels (for `atmguard replay`) from every closed case."""
        from atmguard.gateway.casebook import CaseBook
        from atmguard.gateway.labels import export_labels

        n = export_labels(CaseBook(_sessions(_settings(data_dir, database_url))), out)
        typer.echo(f"wrote {n} label(s) to {out}")
