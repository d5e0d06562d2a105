"""ATMs as the console needs them (address, district), from the deployment config."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AtmInfo:
    """Where an ATM is."""

    id: str
    address: str
    district: str
    place: str | None = None
    bank: str | None = None


def load_atms(config_dir: Path) -> dict[str, AtmInfo]:
    """ATMs by id: through the notifier's config loader, else straight from the YAML; {} if none."""
    try:
        from atmguard.notifier.config import load_deployment

        deployment = load_deployment(config_dir)
        return {
            a.id: AtmInfo(a.id, a.address, a.district, getattr(a, "place", None), getattr(a, "bank", None))
            for a in deployment.atms
        }
    except Exception as exc:  # a broken or half-written config must not stop the console
        log.info("deployment config not loaded through the notifier (%s); reading ATMs directly", exc)
    path = config_dir / "deployment.yaml"
    if not path.exists():
        return {}
    from ruamel.yaml import YAML

    try:
        data = YAML(typ="safe").load(path.read_text(encoding="utf-8")) or {}
        return {
            str(a["id"]): AtmInfo(str(a["id"]), str(a.get("address", "")), str(a.get("district", "")), a.get("place"), a.get("bank"))
            for a in data.get("atms", [])
        }
    except Exception as exc:
        log.warning("cannot read ATMs from %s: %s", path, exc)
        return {}
