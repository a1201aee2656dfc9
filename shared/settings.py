"""Settings helpers shared by every service."""

from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """Fields every service has. Subclasses set their own ``env_prefix``.

    ``CSP_INTERNAL_SECRET`` is read without the service prefix because every service must share it;
    it has no default, so a service never starts with a guessable signing key.
    """

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    database_url: str = "sqlite:///var/service.db"
    internal_secret: SecretStr = Field(
        validation_alias=AliasChoices("internal_secret", "CSP_INTERNAL_SECRET")
    )
    internal_token_ttl_seconds: int = 10
    log_level: str = "INFO"
    host: str = "127.0.0.1"
    port: int = 8000
