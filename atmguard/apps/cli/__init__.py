"""The `atmguard` command line: one Typer app, each part registers its own commands.

Commands import their heavy dependencies (MediaPipe, Faust, durable_rules) inside the
command body so `atmguard --help` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from atmguard import __version__
from atmguard.apps.cli import detectors as detectors_cli
from atmguard.apps.cli import gateway as gateway_cli
from atmguard.apps.cli import notifier as notifier_cli
from atmguard.apps.cli import rules as rules_cli
from atmguard.apps.cli import stack as stack_cli
from atmguard.apps.cli.bench import bench_app

app = typer.Typer(
    name="atmguard",
    help="Stop phone-coached scams at ATMs: detectors -> stream -> rules -> notifier.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(bench_app, name="bench")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"atmguard {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """atmguard: cameras at ATMs give behaviour facts, banks give transfer signals, rules combine them."""


@app.command("schemas")
def schemas_command(
    out: Path = typer.Option(Path("docs/schemas"), "--out", help="Folder to write the JSON Schemas to."),
    check: bool = typer.Option(False, "--check", help="Only check the files are current; exit 1 if not."),
) -> None:
    """Write the JSON Schemas of the event contracts and the rule language."""
    from atmguard.apps.schemas import all_schemas

    stale: list[str] = []
    out.mkdir(parents=True, exist_ok=True)
    for name, schema in all_schemas().items():
        text = json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        path = out / name
        if check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(str(path))
        else:
            path.write_text(text, encoding="utf-8")
            typer.echo(f"wrote {path}")
    if stale:
        typer.echo("stale schemas (run `atmguard schemas`): " + ", ".join(stale), err=True)
        raise typer.Exit(1)


for part in (rules_cli, stack_cli, detectors_cli, notifier_cli, gateway_cli):
    part.register(app)


def main() -> None:
    """Console-script entry point."""
    app()
