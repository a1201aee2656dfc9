"""Ingest settings, read from ``CSP_INGEST_*`` (and the unprefixed shared ones)."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="CSP_INGEST_", extra="ignore", populate_by_name=True
    )

    database_url: str = "sqlite:///var/ingest.db"
    port: int = 8002
    depersonalise_url: str = "http://127.0.0.1:8003"
    agreements_url: str = "http://127.0.0.1:8001"
    catalogue_dir: str | None = None

    max_body_bytes: int = Field(default=512 * 1024 * 1024, description="larger pushes get 413")
    max_rows_per_batch: int = Field(default=5_000_000, le=16_000_000)
    chunk_rows: int = Field(default=2000, ge=1, le=10_000)
    max_errors_listed: int = 1000
    idempotency_ttl_hours: int = Field(default=24, ge=24)

    relay_enabled: bool = True
    relay_batch_events: int = Field(default=500, ge=1)
    relay_interval_seconds: float = 0.5
    relay_backoff_max_seconds: float = 60.0
    relay_timeout_seconds: float = 30.0

    purge_enabled: bool = True
    purge_interval_seconds: float = 3600.0

    # The HMAC key of record keys (what depersonalise knows a record by): ingest's alone, never a
    # token key. Existing hubs set it to their former CSP_INTERNAL_SECRET, so keys stay the same.
    record_key_secret: SecretStr | None = Field(default=None, min_length=16)

    # Person linkage (services/ingest/linkage.py). The key is ingest's alone, never the internal
    # secret; without one, records are stored unlinked.
    linkage_key: SecretStr | None = Field(default=None, min_length=16)
    link_accept_weight: float = Field(default=6.0, description="match weight that links a pair")
    link_review_weight: float = Field(default=0.0, description="weight that queues it for review")
    link_min_training_records: int = Field(default=50, ge=2)


def record_key_secret(settings: Settings) -> str:
    """The key of the record keys depersonalise knows records by: ingest's own, no default."""
    if settings.record_key_secret is None:
        raise RuntimeError("ingest has no record key secret: set CSP_INGEST_RECORD_KEY_SECRET")
    return settings.record_key_secret.get_secret_value()
