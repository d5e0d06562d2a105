"""Gateway tunables (env ATMGUARD_GATEWAY_*): limits, clock skew, hold lifetime, webhooks."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


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
