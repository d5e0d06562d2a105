"""Commands of the detectors part, registered on the main `atmguard` app."""

from __future__ import annotations

import typer


def register(app: typer.Typer, bench: typer.Typer) -> None:
    """Add this part's commands (and its `atmguard bench detectors` benchmark) to the CLI."""
