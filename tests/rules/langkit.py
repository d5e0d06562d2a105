"""Helpers for the rule-language tests: run the real `atmguard` CLI, write rule files."""

from __future__ import annotations

import textwrap
from pathlib import Path

from typer.testing import CliRunner

from atmguard.apps.cli import app

ISSUE_RULE = """\
rule: coached-transfer
version: 1
description: Long phone call and nervous glances at the ATM while a large transfer to a new payee is made.
severity: critical            # low | medium | high | critical
mode: enforce                 # enforce, or shadow: evaluated and recorded, nobody notified
when:
  all:                        # every pattern matches, in any arrival order
    - event: on_phone         # a behaviour name, or transfer / withdrawal / deposit
      where:
        duration_s: {gte: 60}
        confidence: {gte: 0.6}
    - event: looking_around
      where: {count: {gte: 3}}
    - event: transfer
      as: first_transfer      # optional alias; later patterns may refer to it
      where:
        amount: {gte: 300000}
        currency: KZT
        payee_new: true
  within: 5m                  # all matched events' ts lie within 5 minutes of each other
  by: atm_id                  # correlation key (default atm_id)
cooldown: 10m                 # at most one intervention per rule and key within this span
actions:
  sms: [patrol]               # recipient groups defined in configs
  radio: [dispatch]
  hold: true                  # advise the bank to hold further operations at this ATM
message: "{atm_id}: on the phone {on_phone.duration_s:.0f}s, looked around {looking_around.count} times, transfer {first_transfer.amount} {first_transfer.currency} to a new payee"
"""
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
