"""ATMs as the console needs them (address, district), from the notifier's deployment config."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from atmguard.core.errors import ConfigError
from atmguard.notifier.config import load_deployment

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
    """ATMs by id; {} (and a warning) when the deployment config is missing or broken, so the console still serves."""
    try:
        deployment = load_deployment(config_dir)
    except (ConfigError, OSError) as exc:
        log.warning("ATMs not loaded from %s: %s", config_dir, exc)
        return {}
    return {a.id: AtmInfo(a.id, a.address, a.district, a.place, a.bank) for a in deployment.atms}
