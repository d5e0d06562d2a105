"""Helpers for the rule-language tests: run the real `atmguard` CLI, write rule files, wait for a reload."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Callable
from pathlib import Path

from typer.testing import CliRunner

from atmguard.apps.cli import app
from tests.factories import COACHED_TRANSFER

ISSUE_RULE = COACHED_TRANSFER
"""The contract example of issue 2, verbatim."""


def run(*args: str | Path):
    """Invoke `atmguard ARGS...` in-process; the result has exit_code, stdout, stderr, output."""
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def write(folder: Path, name: str, text: str) -> Path:
    """Write a (dedented) file under folder and return its path."""
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


async def eventually(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Wait until `check()` holds; fail after a generous bound (watch events are asynchronous)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, f"gave up waiting for {what}"
        await asyncio.sleep(0.05)
