"""The demo's copy of the deployment config: webhooks to the local receiver, escalation in seconds.

The real configs/ stay untouched; the demo runs on a copy in its data dir, so a dispatcher sees
acknowledgement and escalation within the demo's run instead of after minutes.
"""

from __future__ import annotations

import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEPLOYMENT = "deployment.yaml"


@dataclass
class DemoConfig:
    """Where the demo's config lives and what it changed."""

    config_dir: Path
    webhook_secrets: dict[str, str] = field(default_factory=dict)  # webhook name -> per-run secret
    secret_envs: dict[str, str] = field(default_factory=dict)  # env var name -> per-run secret
    escalation_after: list[tuple[str, float]] = field(default_factory=list)  # (original, demo seconds)
    escalation_steps: list[dict[str, Any]] = field(default_factory=list)


def write_demo_config(source: Path, target: Path, *, receiver_url: str, step_s: float) -> DemoConfig:
    """Copy `source` (a configs folder) to `target`, pointing webhooks at `receiver_url`/<name>
    with a fresh secret each, and making escalation step i come `i * step_s` seconds after."""
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.glob("*.y*ml")):
        if path.name != DEPLOYMENT:
            shutil.copy2(path, target / path.name)
    out = DemoConfig(config_dir=target)
    src = source / DEPLOYMENT
    if not src.exists():
        return out
    doc = yaml.safe_load(src.read_text(encoding="utf-8")) or {}
    for name, hook in (doc.get("webhooks") or {}).items():
        secret = secrets.token_hex(32)
        hook["url"] = f"{receiver_url.rstrip('/')}/{name}"
        out.webhook_secrets[str(name)] = secret
        out.secret_envs[str(hook.get("secret_env") or f"ATMGUARD_WEBHOOK_{str(name).upper()}_SECRET")] = secret
    steps = (doc.get("escalation") or {}).get("steps") or []
    for i, step in enumerate(steps, start=1):
        original = str(step.get("after", "?"))
        step["after"] = f"{i * step_s:g}s"
        out.escalation_after.append((original, i * step_s))
        out.escalation_steps.append({k: v for k, v in step.items() if k != "after"})
    (target / DEPLOYMENT).write_text(
        "# atmguard demo: a copy of " + str(src) + " with webhooks to the demo's local receiver and\n"
        "# escalation after seconds instead of minutes. Written per run; not a config to edit.\n"
        + yaml.safe_dump(doc, allow_unicode=True, sort_keys=False),
        encoding="utf-8",
    )
    return out
