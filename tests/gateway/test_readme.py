"""The README's signing examples (Python and curl/openssl), run as written against a live gateway."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sys

import pytest

from atmguard.core.settings import Settings
from atmguard.gateway.api.app import create_app
from tests.conftest import REPO
from tests.gateway.conftest import RecordingPublisher, serve


def _section() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index("<!-- section: gateway -->")
    end = text.find("<!-- section:", start + 10)
    return text[start : end if end > 0 else None]


def _block(lang: str, contains: str) -> str:
    for m in re.finditer(rf"```{lang}\n(.*?)```", _section(), re.S):
        if contains in m.group(1):
            return m.group(1)
    raise AssertionError(f"no ```{lang} block with {contains!r} in the README's gateway section")


async def _run(argv: list[str], env: dict[str, str]) -> str:
    proc = await asyncio.create_subprocess_exec(*argv, env={**os.environ, **env}, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def test_readme_signing_examples_get_accepted(settings: Settings) -> None:
    python = _block("python", "hmac.new")
    assert len(python.strip().splitlines()) == 5
    shell = _block("sh", "openssl dgst")
    if not shutil.which("openssl") or not shutil.which("curl"):
        pytest.skip("curl and openssl are needed for the shell example")
    publisher = RecordingPublisher()
    app = create_app(settings, publisher=publisher)
    key = app.state.gateway.keys.add("halyk")
    async with serve(app) as url:
        env = {"KEY": key, "URL": url}
        py_answer = json.loads(await _run([sys.executable, "-c", python], env))
        sh_answer = json.loads(await _run(["bash", "-c", "set -euo pipefail\n" + shell], env))
    assert py_answer["event_id"] == "trx-1002" and py_answer["status"] == "accepted"
    assert sh_answer["event_id"] == "trx-1001" and sh_answer["advice"] in ("allow", "hold")
    assert sorted(e.id for e in publisher.events) == ["trx-1001", "trx-1002"]
