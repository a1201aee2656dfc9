"""Settings of the depersonalise service (``CSP_DEPERSONALISE_*``)."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from services.depersonalise.cellkey import key_secret
from shared.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="CSP_DEPERSONALISE_", extra="ignore", populate_by_name=True
    )

    database_url: str = "sqlite:///var/depersonalise.db"
    # A read replica of database_url for answers (aggregates' cube reads, record pages); events,
    # rebuilds and the record of each release always go to database_url.
    read_database_url: str | None = None
    port: int = 8003
    ingest_url: str = "http://127.0.0.1:8002"
    ingest_timeout_seconds: float = 30.0
    replay_page_size: int = 2000
    replay_retry_seconds: float = 600.0  # how long a rebuild waits for ingest before it fails
    reconcile_interval_seconds: float = 300.0  # raw against derived on this schedule; 0: never
    max_upload_bytes: int = 250_000_000  # operators' layer uploads
    # A GeoJSON layer is counted as it streams (its text is slow to parse): one this large
    # loads within 2 s; larger layers come as a zipped shapefile or a GeoPackage.
    max_geojson_vertices: int = 200_000
    # Any read key's POST /v1/depersonalise: about 23,000 records, answered within 2 s.
    max_depersonalise_bytes: int = 3_000_000
    records_page_max: int = 5000
    max_cells: int = 2_000_000  # largest aggregate table one query may ask for
    wire_simplify_metres: float = 10.0
    # The secret of record and cell keys (cellkey.key_secret): depersonalise's own, never a token
    # key. key_secret(<this>) reproduces keys made under a former CSP_INTERNAL_SECRET of that value.
    cell_key_secret: SecretStr | None = Field(default=None, min_length=16)

    def record_key_secret(self) -> bytes:
        """The secret of the stable record and person keys the count cube sums (cellkey.py)."""
        if self.cell_key_secret is None:
            raise RuntimeError("CSP_DEPERSONALISE_CELL_KEY_SECRET is not set")
        return key_secret(self.cell_key_secret.get_secret_value())
