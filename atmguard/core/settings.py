"""Process settings, read once from the environment (ATMGUARD_*) and CLI flags.

Secrets (Twilio token, bank keys, session secret) come from here or from files in the
data directory, never from code, and are never logged.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_data_dir() -> Path:
    """Where the embedded stack keeps its case store and keys: $XDG_DATA_HOME/atmguard."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "atmguard"


def default_footage_dir() -> Path:
    """Real footage lives beside the checkout (`../shared/footage`), never inside it.

    Outside a checkout (an installed package) the same relative place is taken from the
    working directory. ATMGUARD_FOOTAGE overrides both.
    """
    checkout = Path(__file__).resolve().parents[2]
    base = checkout if (checkout / "pyproject.toml").is_file() else Path.cwd()
    return base.parent / "shared" / "footage"


class Settings(BaseSettings):
    """Everything a process needs to find its peers; defaults give the embedded stack."""

    model_config = SettingsConfigDict(env_prefix="ATMGUARD_", extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir)
    config_dir: Path = Field(default=Path("configs"), description="Deployment configs: ATMs, cameras, recipients.")
    rules_dir: Path = Field(default=Path("rules"), description="The rule pack the engine runs.")
    broker: str | None = Field(default=None, description="kafka://host:9092[,host2:9092]; unset = embedded broker.")
    partitions: int = Field(default=4, ge=1)
    topic_facts: str = "atmguard.facts"
    topic_bank: str = "atmguard.bank"
    topic_interventions: str = "atmguard.interventions"
    http_port: int = Field(default=8080, ge=0, le=65535)
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; unset = SQLite in the data dir.")
    public_url: str = Field(default="http://127.0.0.1:8080", description="Base URL for console links in SMS.")
    twilio_account_sid: str | None = None
    twilio_auth_token: SecretStr | None = None
    twilio_from: str | None = None
    twilio_base_url: str | None = Field(default=None, description="Point the twilio SDK at a local sink.")
    session_secret: SecretStr | None = None
    footage: Path = Field(default_factory=default_footage_dir,
                          description="Folder of real clips and photographs (ATMGUARD_FOOTAGE); read, never copied.")

    def resolved_database_url(self) -> str:
        """The case store URL: configured, or SQLite inside the data directory."""
        if self.database_url:
            return self.database_url
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{self.data_dir / 'atmguard.db'}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once."""
    return Settings()
