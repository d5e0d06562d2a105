"""Commands of the gateway part, registered on the main `atmguard` app."""

from __future__ import annotations

import typer


def register(app: typer.Typer, bench: typer.Typer) -> None:
    """Add this part's commands (and its `atmguard bench gateway` benchmark) to the CLI."""
