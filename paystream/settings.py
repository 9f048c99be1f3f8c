"""Typed, frozen settings: environment (``PAYSTREAM_*``) and an optional TOML file.

Unset service URLs mean the embedded defaults: a local Kafka broker, an
embedded PostgreSQL and a local Keycloak started by ``paystream services up``,
and ClickHouse's embedded engine (``chdb://<data_dir>/clickhouse``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal, TypeAlias

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from paystream.ledger.models import AMOUNT_MAX_MINOR, Rules
from paystream.webhooks.schedule import DELAY_MAX_S as WEBHOOK_DELAY_MAX_S
from paystream.webhooks.schedule import DELAYS_MAX as WEBHOOK_DELAYS_MAX
from paystream.webhooks.schedule import SVIX_DELAYS_S

PARTITIONS_MAX = 1024
RETENTION_MAX_S = 366 * 24 * 3600
SETTINGS_FILE_ENV = "PAYSTREAM_SETTINGS_FILE"


Security: TypeAlias = Literal["plaintext", "scram"]
SCRAM_MECHANISM: Final = "SCRAM-SHA-256"


@dataclass(frozen=True, slots=True, kw_only=True)
class KafkaConnection:
    """A bootstrap address and the credentials to present there (none for ``plaintext``)."""

    bootstrap: str
    security: Security = "plaintext"
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.security == "scram" and not (self.username and self.password):
            raise ValueError("a scram connection needs a username and a password")

    @classmethod
    def plaintext(cls, bootstrap: str) -> KafkaConnection:
        return cls(bootstrap=bootstrap)

    def config(self) -> dict[str, str | int | float | bool]:
        """librdkafka's settings for this connection; callers add their own to a copy."""
        base: dict[str, str | int | float | bool] = {"bootstrap.servers": self.bootstrap}
        if self.security == "plaintext":
            return base | {"security.protocol": "plaintext"}
        if self.username is None or self.password is None:  # checked in __post_init__
            raise ValueError("a scram connection needs a username and a password")
        return base | {
            "security.protocol": "sasl_plaintext",
            "sasl.mechanism": SCRAM_MECHANISM,
            "sasl.username": self.username,
            "sasl.password": self.password,
        }


PLATFORM_SECRET_FILE: Final = "platform.secret"
"""In the local broker's home: the platform principal's generated SCRAM password (0600)."""


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
    kafka_security: Security = "scram"
    """``scram``: SASL/SCRAM-SHA-256 as ``kafka_username`` (the platform's principal, a super
    user of the broker); ``plaintext``: no authentication (a broker secured by its network)."""
    kafka_username: str = Field(default="paystream", pattern=r"^[A-Za-z0-9._-]{1,64}$")
    kafka_password: SecretStr | None = None
    """Unset with the local broker: the password ``paystream services up`` generated for it."""
    kafka_open_port: int | None = Field(default=None, ge=1024, le=65535)
    """TESTS ONLY (refused unless ``environment`` is ``test``), never for a deployment: the
    local scram broker also listens PLAINTEXT on 127.0.0.1:<this>, where anyone connecting is
    a super user (tests/conftest.py: one broker serves the plaintext and the scram tests)."""
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
    webhook_retry_delays_s: tuple[float, ...] = SVIX_DELAYS_S
    """Waits between a webhook delivery's attempts (paystream.webhooks.schedule: Svix's
    5 s .. 10 h, 8 attempts over about 28 h); each is jittered by ±20 %. JSON in the
    environment: ``PAYSTREAM_WEBHOOK_RETRY_DELAYS_S='[1, 2]'``."""
    webhook_timeout_s: float = Field(default=15.0, gt=0, le=60)
    """One delivery request's whole time (connect, send, answer); longer is a failure."""
    webhook_endpoint_concurrency_max: int = Field(default=8, ge=1, le=256)
    """Requests in flight to one endpoint, across every copy of ``paystream webhooks``."""
    webhook_breaker_failures: int = Field(default=10, ge=1, le=1_000)
    """Failed requests in a row that open an endpoint's circuit (paystream.webhooks.breaker)."""
    webhook_breaker_cooldown_s: float = Field(default=30.0, gt=0, le=3_600)
    """An open circuit's first cool-down; it doubles on each reopening, up to an hour."""
    smtp_url: SecretStr | None = None
    """The SMTP server emails go to: ``smtp://[user:password@]host[:port]`` (STARTTLS when the
    server offers it, required when credentials are given) or ``smtps://...`` (TLS from the
    first byte). Secret: it may carry a password. Unset: the local mailbox
    (``paystream mailbox``) on ``127.0.0.1:smtp_port``."""
    smtp_port: int = Field(default=18025, ge=1024, le=65535)
    """The local mailbox's port (used only while ``smtp_url`` is unset)."""
    smtp_from: str = Field(
        default="paystream <notifications@paystream.localhost>",
        min_length=3,
        max_length=254,
        pattern=r"^[^\r\n]*@[^\r\n]*$",
    )
    """The From header of every email (an address, optionally with a display name)."""

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("webhook_retry_delays_s")
    @classmethod
    def _bounded_delays(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not 0 < len(value) <= WEBHOOK_DELAYS_MAX:
            raise ValueError(f"1..{WEBHOOK_DELAYS_MAX} webhook retry delays")
        if not all(0 < delay <= WEBHOOK_DELAY_MAX_S for delay in value):
            raise ValueError(f"each webhook retry delay in (0, {WEBHOOK_DELAY_MAX_S}] s")
        return value

    @model_validator(mode="after")
    def _open_port_in_tests_only(self) -> Settings:
        if self.kafka_open_port is not None and self.environment != "test":
            raise ValueError("kafka_open_port (an unauthenticated super user's port) is for tests")
        if self.kafka_open_port is not None and self.kafka_security != "scram":
            raise ValueError("kafka_open_port is a second listener of a scram broker")
        return self

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
    def kafka(self) -> KafkaConnection:
        """The configured Kafka with this process's credentials (every client starts here)."""
        if self.kafka_security == "plaintext":
            return KafkaConnection.plaintext(self.bootstrap)
        if self.kafka_password is not None:
            password = self.kafka_password.get_secret_value()
        elif self.kafka_bootstrap is None:
            password = self.local_platform_password()
        else:
            raise ValueError("PAYSTREAM_KAFKA_PASSWORD is needed for scram on a configured broker")
        return KafkaConnection(
            bootstrap=self.bootstrap,
            security="scram",
            username=self.kafka_username,
            password=password,
        )

    def local_platform_password(self) -> str:
        """The platform's SCRAM password the local broker was formatted with."""
        path = self.services_dir / "kafka" / PLATFORM_SECRET_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no local broker yet (paystream services up)")
        return path.read_text().strip()

    @property
    def clickhouse_dsn(self) -> str:
        """A server URL when configured, else the embedded engine's directory."""
        return self.clickhouse_url or f"chdb://{self.data_dir / 'clickhouse'}"

    def topic(self, name: str) -> str:
        """The full name of one of paystream's topics: ``<prefix>.<name>``."""
        return f"{self.topic_prefix}.{name}"
