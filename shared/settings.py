"""Settings helpers shared by every service."""

from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """Fields every service has. Subclasses set their own ``env_prefix``.

    A service that calls others signs its internal tokens with its own key
    (``CSP_<SERVICE>_TOKEN_KEY`` or ``_FILE``; no default, so a service never signs with a
    guessable key). ``CSP_INTERNAL_PUBLIC_KEYS`` (the callers' public keys) and ``CSP_REDIS_URL``
    are read without the service prefix because every service reads the same values.
    """

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    database_url: str = "sqlite:///var/service.db"
    token_key: SecretStr | None = Field(
        default=None, description="base64 of the 32-byte Ed25519 seed this service signs with"
    )
    token_key_file: str | None = Field(default=None, description="a file holding that seed")
    internal_public_keys: str = Field(
        default="",
        validation_alias=AliasChoices("internal_public_keys", "CSP_INTERNAL_PUBLIC_KEYS"),
        description="name:base64 public keys of the services that sign internal tokens",
    )
    internal_token_ttl_seconds: int = 10
    redis_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("redis_url", "CSP_REDIS_URL"),
        description="shared replay memory (and the gateway's rate limits) for all replicas",
    )
    log_level: str = "INFO"
    host: str = "127.0.0.1"
    port: int = 8000
