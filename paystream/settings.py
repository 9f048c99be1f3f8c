"""Typed, frozen settings: environment (``PAYSTREAM_*``) and an optional TOML file.

Unset service URLs mean the embedded defaults: a local Kafka broker, an
embedded PostgreSQL and a local Keycloak started by ``paystream services up``,
and ClickHouse's embedded engine (``chdb://<data_dir>/clickhouse``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from paystream.ledger.models import AMOUNT_MAX_MINOR, Rules

PARTITIONS_MAX = 1024
RETENTION_MAX_S = 366 * 24 * 3600
SETTINGS_FILE_ENV = "PAYSTREAM_SETTINGS_FILE"


PAYOUTS_PER_BATCH_LIMIT = 1_000
"""The highest ``payouts_per_batch_max`` may be set (a batch is one request body)."""
PAYOUT_CURRENCIES_DEFAULT = ("EUR", "USD", "GBP", "CHF", "SEK", "NOK", "DKK", "PLN", "CZK", "JPY")


class Settings(BaseSettings):
    """Everything paystream needs to find its infrastructure."""

    model_config = SettingsConfigDict(env_prefix="PAYSTREAM_", frozen=True, extra="forbid")

    environment: Literal["development", "test", "production"] = "development"
    data_dir: Path = Field(default_factory=lambda: Path(".data").resolve())
    kafka_bootstrap: str | None = None
    kafka_port: int = Field(default=19092, ge=1024, le=65535)
    postgres_dsn: str | None = None
    clickhouse_url: str | None = None
    clickhouse_database: str = Field(default="paystream", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
    """The analytics store's database in ClickHouse."""
    schema_registry_url: str | None = None
    oidc_issuer: str | None = None
    """An OIDC issuer URL (tokens' ``iss``); unset: the local Keycloak's ``paystream`` realm."""
    keycloak_port: int = Field(default=18080, ge=1024, le=65534)
    """The local Keycloak's HTTP port; its management (health) port is the next one."""
    topic_prefix: str = Field(default="paystream", pattern=r"^[A-Za-z0-9._-]{1,100}$")
    partitions: int = Field(default=8, ge=1, le=PARTITIONS_MAX)
    idempotency_retention_s: int = Field(default=7 * 24 * 3600, ge=60, le=RETENTION_MAX_S)
    """How long request ids and command ids are remembered, in log time (Stripe keeps 24 h)."""
    amount_max_minor: int = Field(default=AMOUNT_MAX_MINOR, ge=1, le=AMOUNT_MAX_MINOR)
    """The most one Transfer or Withdrawal may move, in minor units of its currency; above it
    the command is ``Rejected`` ``amount_over_limit`` (deposits are not limited). Every
    worker must run with the same value; each batch's manifest records the one it used."""
    read_model_lag_max: int = Field(default=100_000, ge=0)
    """The API is not ready (``/readyz`` 503) while the Postgres read models are more than this
    many records behind the ``ledger`` and ``events`` logs: about 20 s of the sink's measured
    drain, so a burst does not take every API process out of rotation, a stopped sink does."""
    transaction_timeout_s: float = Field(default=10.0, ge=1.0, le=900.0)
    """Kafka's ``transaction.timeout.ms`` for the workers: a batch's transaction lasts
    milliseconds; a worker killed mid-batch and not restarted delays its partitions' new
    owner by up to this (plus the broker's abort-check interval). Kafka's default is 60 s."""

    payouts_per_batch_max: int = Field(default=100, ge=1, le=PAYOUTS_PER_BATCH_LIMIT)
    """The most payouts one ``POST /v1/payout-batches`` may carry (the seed's batches are 50);
    above it the batch is refused whole (``batch_too_large``), nothing sent."""
    payout_currencies: tuple[str, ...] = PAYOUT_CURRENCIES_DEFAULT
    """Currencies the bank rail pays out; a payout in another is refused
    (``currency_not_supported``) before anything is sent."""

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        settings_file = os.environ.get(SETTINGS_FILE_ENV)
        if settings_file:
            path = Path(settings_file)
            if not path.is_file():
                raise FileNotFoundError(f"{SETTINGS_FILE_ENV}={settings_file}: no such file")
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    @property
    def rules(self) -> Rules:
        """The money core's settings (replay must use the same)."""
        return Rules(
            retention_ms=self.idempotency_retention_s * 1000,
            amount_max_minor=self.amount_max_minor,
        )

    @property
    def services_dir(self) -> Path:
        """Where the local launcher keeps pid files, logs and service data."""
        return self.data_dir / "services"

    @property
    def bootstrap(self) -> str:
        """The configured Kafka, else the local broker ``paystream services up`` runs."""
        return self.kafka_bootstrap or f"127.0.0.1:{self.kafka_port}"

    @property
    def clickhouse_dsn(self) -> str:
        """A server URL when configured, else the embedded engine's directory."""
        return self.clickhouse_url or f"chdb://{self.data_dir / 'clickhouse'}"

    def topic(self, name: str) -> str:
        """The full name of one of paystream's topics: ``<prefix>.<name>``."""
        return f"{self.topic_prefix}.{name}"
