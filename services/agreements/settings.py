"""Settings of the agreements service (environment prefix ``CSP_AGREEMENTS_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings

REFERENCE_DIR = Path(__file__).resolve().parent / "reference"


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="CSP_AGREEMENTS_", extra="ignore", populate_by_name=True
    )

    database_url: str = "sqlite:///var/agreements.db"
    port: int = 8001
    review_grace_days: int = Field(
        default=30,
        ge=0,
        description="days an agreement past review_by still allows, with a warning",
    )
    reference_dir: Path = REFERENCE_DIR
    catalogue_dir: str | None = Field(
        default=None,
        description="dataset catalogue folder; default CSP_CATALOGUE_DIR or catalogue/",
    )
    decision_flush_seconds: float = Field(
        default=0.25, gt=0, description="how often buffered decision log rows are written"
    )
    decision_flush_rows: int = Field(
        default=500, ge=1, description="write at once when this many decisions are buffered"
    )
    snapshot_recheck_seconds: float = Field(
        default=0.1,
        ge=0,
        description="how stale a replica's copy may be after a change made through another one",
    )
    # Agreements and decisions are small JSON: larger bodies get 413 as they stream.
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    ops_agency: str = "ops"
    ops_agency_name: str = "Hub operators"
