"""Gateway settings: ``CSP_GATEWAY_*`` (plus the unprefixed shared and operator variables)."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings

REPO = Path(__file__).resolve().parents[2]


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="CSP_GATEWAY_", extra="ignore", populate_by_name=True
    )

    port: int = 8000
    database_url: str = "sqlite:///var/gateway.db"
    agreements_url: str = "http://127.0.0.1:8001"
    ingest_url: str = "http://127.0.0.1:8002"
    depersonalise_url: str = "http://127.0.0.1:8003"

    admin_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("admin_key", "CSP_ADMIN_KEY")
    )

    connect_timeout_seconds: float = 2.0
    read_timeout_seconds: float = 60.0
    max_connections_per_backend: int = 200
    # Large because CSV pushes stream through; counted as the body streams, never buffered.
    max_body_bytes: int = 512 * 1024 * 1024

    key_cache_seconds: float = 0.5
    decision_cache_seconds: float = 0.4
    last_used_flush_seconds: float = 5.0

    # Per key; several limits separated by ";" (``limits`` notation).
    rate_limit: str = "100/second;3000/minute"

    audit_enabled: bool = Field(
        default=True, description="switch off only to measure the audit's cost in the benchmark"
    )
    audit_batch_max: int = 256
    audit_checkpoint_every: int = 1000
    audit_checkpoint_seconds: float = 60.0
    retention_audit_seconds: float = Field(
        default=60.0, description="how often ingest's purge log is taken into the audit; 0: never"
    )
    audit_signing_key: SecretStr | None = Field(
        default=None, description="base64 of a 32-byte Ed25519 seed; generated into the DB if unset"
    )
    audit_signing_key_file: str | None = Field(
        default=None, description="a file (a mounted secret) holding that seed instead"
    )
    audit_trusted_public_keys: list[str] = Field(
        default_factory=list,
        description="base64 public keys of earlier signing keys, trusted besides the current one",
    )
    oauth_signing_key: SecretStr | None = Field(
        default=None, description="the Ed25519 key signing OAuth access tokens: base64 seed or PEM"
    )
    oauth_signing_key_file: str | None = Field(
        default=None,
        description="a file holding that key; unset: generated (0600) beside a SQLite database",
    )
    oauth_token_ttl_seconds: int = Field(default=900, ge=1, le=3600)
    openapi_cache_seconds: float = 60.0

    # Where ``make web`` (or the image build) installed the analysts' page's npm packages.
    web_vendor_dir: str = str(
        Path(__file__).resolve().parents[2] / "build" / "web" / "node_modules"
    )

    expose_docs: bool = False
    cors_origins: list[str] = Field(default_factory=list)
