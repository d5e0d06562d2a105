"""Process settings: one tree, read from the environment (ATMGUARD_*) and CLI flags, nowhere else.

    Settings                      ATMGUARD_DATA_DIR, _CONFIG_DIR, _RULES_DIR, _BROKER, _PARTITIONS, _TOPIC_*,
    │                             _HTTP_PORT, _DATABASE_URL, _PUBLIC_URL, _TWILIO_*, _SESSION_SECRET, ...
    ├── kafka: KafkaSettings      ATMGUARD_FETCH_PACING
    ├── engine: EngineSettings    ATMGUARD_ENGINE_*   (one engine worker's tuning)
    ├── gateway: GatewaySettings  ATMGUARD_GATEWAY_*  (bank API limits, holds, webhooks to banks)
    ├── notifier: NotifierSettings ATMGUARD_NOTIFIER_API_TOKEN
    ├── detectors: DetectorSettings ATMGUARD_FOOTAGE, ATMGUARD_MODEL_CACHE
    └── runtime: RuntimeSettings  ATMGUARD_GC_FREEZE_S, _GC_FULL_S, _GIL_SWITCH_S

Each section is its own pydantic-settings model, so the environment names stay short and as
documented, and a part that needs only its section can read just that (`GatewaySettings()`).
A bad value fails at start with the variable's name. Secrets (Twilio token, bank-key master
secret, session secret, API token) come from here or from files in the data directory, never
from code, and are never logged (SecretStr).
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


def default_model_cache() -> Path:
    """$XDG_CACHE_HOME/atmguard/models, else ~/.cache/atmguard/models."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "atmguard" / "models"


class KafkaSettings(BaseSettings):
    """How atmguard's Kafka clients behave towards the broker."""

    model_config = SettingsConfigDict(env_prefix="ATMGUARD_", extra="ignore")

    fetch_pacing: float = Field(
        default=4.0, ge=0,
        description="A consumer waits this many times the broker's last answer time before its next fetch (0: off). "
                    "See docs/operations.md.",
    )


class EngineSettings(BaseSettings):
    """How one engine worker runs; the defaults are the tuned values recorded in docs/operations.md."""

    model_config = SettingsConfigDict(env_prefix="ATMGUARD_ENGINE_", extra="ignore")

    app_id: str = Field(default="atmguard-engine", min_length=1, description="Faust app id (consumer group prefix).")
    dedupe_ttl_s: float = Field(default=600.0, gt=0, description="Processed event ids are remembered this long (event time).")
    fetch_max_wait_ms: int = Field(default=10, ge=1, le=5000, description="Longest a fetch waits at the broker.")
    session_timeout_s: float = Field(default=3.0, gt=0, description="Consumer-group session timeout.")
    heartbeat_s: float = Field(default=0.5, gt=0, description="Consumer-group heartbeat interval.")
    commit_interval_s: float = Field(default=0.2, gt=0, description="Offsets are committed this often.")
    watch_rules: bool = Field(default=True, description="Reload the rules folder when a file changes.")
    reload_debounce_ms: int = Field(default=300, ge=0, description="Rule file changes closer than this are one reload.")
    sweep_interval_s: float = Field(default=5.0, gt=0, description="How often old events leave the rule state.")
    batch_max: int = Field(default=500, ge=1, description="Records processed in one agent step at most.")
    batch_within_ms: float = Field(default=5.0, gt=0, description="Longest wait for a batch to fill.")
    fetch_pacing: float = Field(
        default=1.0, ge=0,
        description="The engine's input consumer waits this many times the broker's last answer time before its "
                    "next fetch (0: off); lower than ATMGUARD_FETCH_PACING: these fetches are on the latency path.",
    )
    epoch_check_s: float = Field(default=0.5, gt=0, description="How often a worker checks whether the broker lost its data.")
    commit_timeout_s: float = Field(default=10.0, gt=0, description="An offset commit not done by then is given up.")
    stop_timeout_s: float = Field(default=15.0, gt=0, description="A Faust app not stopped by then is abandoned.")


class GatewaySettings(BaseSettings):
    """Limits of the bank API; defaults suit one city's banks on the embedded stack."""

    model_config = SettingsConfigDict(env_prefix="ATMGUARD_GATEWAY_", extra="ignore")

    max_body_bytes: int = Field(default=1_048_576, ge=1024, description="Largest request body accepted (413 above).")
    max_batch: int = Field(default=500, ge=1, description="Most events in one request.")
    clock_skew_s: int = Field(default=300, ge=1, description="How far X-Atmguard-Timestamp may be off (401 beyond).")
    rate_per_s: float = Field(default=200.0, gt=0, description="Requests per second per bank, sustained (429 above).")
    rate_burst: int = Field(default=400, ge=1, description="Requests a bank may send at once.")
    retry_after_s: int = Field(default=2, ge=1, description="Retry-After on 503 while the broker is down.")
    hold_ttl_s: float = Field(default=1800.0, gt=0, description="An open hold intervention stops advising hold after this.")
    customer_window_s: float = Field(default=1800.0, gt=0, description="A bank 'has a customer' at an ATM this long after its last event there.")
    bank_follow_s: float = Field(
        default=1.0, ge=0,
        description="How often the gateway reads bank events other gateways or producers published (its own apply at once); 0: as they come.",
    )
    receipts_memory_s: float = Field(default=86400.0, gt=0, description="Answers of this long ago are replayed from memory.")
    snapshot_dirs: list[Path] = Field(
        default_factory=list, description="Folders the console may show snapshots from; default <data dir>/snapshots."
    )
    webhook_retries: int = Field(default=4, ge=0)
    webhook_timeout_s: float = Field(default=5.0, gt=0)


class NotifierSettings(BaseSettings):
    """The notifier's own secrets (channels and people are in configs/deployment.yaml)."""

    model_config = SettingsConfigDict(env_prefix="ATMGUARD_NOTIFIER_", extra="ignore")

    api_token: SecretStr | None = Field(default=None, description="Bearer token of the acknowledgement API.")


class DetectorSettings(BaseSettings):
    """Where the detectors find footage and keep the model bundles they build."""

    model_config = SettingsConfigDict(env_prefix="ATMGUARD_", extra="ignore")

    footage: Path = Field(default_factory=default_footage_dir,
                          description="Folder of real clips and photographs (read, never copied).")
    model_cache: Path = Field(default_factory=default_model_cache,
                              description="Where built model bundles are cached.")


class RuntimeSettings(BaseSettings):
    """The long-running services' pause policy (core/runtime_policy.py, docs/operations.md)."""

    model_config = SettingsConfigDict(env_prefix="ATMGUARD_", extra="ignore")

    gc_freeze_s: float = Field(default=1.0, ge=0, description="Seconds between freezes of long-lived objects (0: off).")
    gc_full_s: float = Field(default=0.0, ge=0, description="Seconds between full collections (0: never).")
    gil_switch_s: float = Field(default=0.0005, ge=0, description="GIL switch interval (0: Python's default).")


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
    bank_key_secret: SecretStr | None = Field(
        default=None, description="Master secret of the bank keys; unset = <data dir>/secrets/bank-keys.secret.")

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    notifier: NotifierSettings = Field(default_factory=NotifierSettings)
    detectors: DetectorSettings = Field(default_factory=DetectorSettings)
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)

    @property
    def footage(self) -> Path:
        """The real footage folder (ATMGUARD_FOOTAGE)."""
        return self.detectors.footage

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
