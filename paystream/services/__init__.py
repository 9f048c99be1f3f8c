"""Real Kafka, Postgres, ClickHouse and Keycloak on this machine, or the configured ones.

A service whose URL is configured (``PAYSTREAM_KAFKA_BOOTSTRAP``,
``PAYSTREAM_POSTGRES_DSN``, ``PAYSTREAM_CLICKHOUSE_URL``,
``PAYSTREAM_OIDC_ISSUER``) is used as it is and never started or stopped here;
the others are launched locally under ``<data_dir>/services``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from paystream.services import clickhouse
from paystream.services.kafka import KafkaBroker, metadata_ok
from paystream.services.keycloak import KeycloakServer, issuer_status
from paystream.services.postgres import EmbeddedPostgres, external_status
from paystream.services.process import ServiceError, tail
from paystream.services.status import ServiceStatus
from paystream.settings import Settings

__all__ = ["Endpoints", "ServiceError", "ServiceStatus", "down", "logs", "status", "up"]

ServiceName = Literal["kafka", "postgres", "clickhouse", "keycloak"]
SERVICE_NAMES: tuple[ServiceName, ...] = ("kafka", "postgres", "clickhouse", "keycloak")
LOG_LINES_DEFAULT = 50


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where the running services answer."""

    kafka_bootstrap: str
    postgres_dsn: str
    clickhouse_dsn: str
    oidc_issuer: str


def local_broker(settings: Settings) -> KafkaBroker:
    """The local broker ``up`` runs (when no bootstrap is configured)."""
    return KafkaBroker(
        home=settings.services_dir / "kafka",
        port=settings.kafka_port,
        security=settings.kafka_security,
        username=settings.kafka_username,
        open_port=settings.kafka_open_port,
    )


def _postgres(settings: Settings) -> EmbeddedPostgres:
    return EmbeddedPostgres(home=settings.services_dir / "postgres")


def local_keycloak(settings: Settings) -> KeycloakServer:
    """The local Keycloak ``up`` runs (when no issuer is configured)."""
    return KeycloakServer(home=settings.services_dir / "keycloak", port=settings.keycloak_port)


def managed_keycloak(settings: Settings) -> KeycloakServer | None:
    """The local Keycloak paystream administers (OAuth clients of partners); None when
    another OIDC provider is configured (its operator registers clients there)."""
    return None if settings.oidc_issuer is not None else local_keycloak(settings)


def oidc_issuer(settings: Settings) -> str:
    """The issuer tokens must come from: the configured one, or the local realm's."""
    return settings.oidc_issuer or local_keycloak(settings).issuer


def up(settings: Settings) -> Endpoints:
    """Start what is not configured externally; idempotent; waits for health."""
    if settings.kafka_bootstrap is None:
        local_broker(settings).start()
        bootstrap = local_broker(settings).bootstrap
    else:
        bootstrap = settings.kafka_bootstrap
        if not metadata_ok(settings.kafka):
            raise ServiceError(f"Kafka at {bootstrap} does not answer a metadata request")
    postgres_dsn = settings.postgres_dsn or _postgres(settings).start()
    clickhouse.ensure(settings.clickhouse_dsn)
    if settings.oidc_issuer is None:
        local_keycloak(settings).start()
    return Endpoints(bootstrap, postgres_dsn, settings.clickhouse_dsn, oidc_issuer(settings))


def postgres_dsn(settings: Settings) -> str:
    """The Postgres to use: the configured one, or the embedded server ``up`` started."""
    return settings.postgres_dsn or _postgres(settings).dsn()


def down(settings: Settings) -> None:
    """Stop exactly what ``up`` started (external services are left alone)."""
    if settings.kafka_bootstrap is None:
        local_broker(settings).stop()
    if settings.postgres_dsn is None:
        _postgres(settings).stop()
    if settings.oidc_issuer is None:
        local_keycloak(settings).stop()


def status(settings: Settings) -> list[ServiceStatus]:
    kafka_status = (
        local_broker(settings).status()
        if settings.kafka_bootstrap is None
        else ServiceStatus(
            name="kafka",
            address=settings.kafka_bootstrap,
            pid=None,
            version=None,
            healthy=metadata_ok(settings.kafka),
            detail="external",
        )
    )
    postgres_status = (
        _postgres(settings).status()
        if settings.postgres_dsn is None
        else external_status(settings.postgres_dsn)
    )
    keycloak_status = (
        local_keycloak(settings).status()
        if settings.oidc_issuer is None
        else issuer_status(settings.oidc_issuer)
    )
    return [
        kafka_status, postgres_status, clickhouse.status(settings.clickhouse_dsn), keycloak_status,
    ]  # fmt: skip


def log_file(settings: Settings, name: ServiceName) -> Path:
    if name == "kafka":
        return local_broker(settings).log_file
    if name == "postgres":
        return _postgres(settings).log_file
    if name == "keycloak":
        return local_keycloak(settings).log_file
    return settings.data_dir / "clickhouse" / "logs" / "clickhouse-server.log"


def logs(settings: Settings, name: ServiceName, *, lines: int = LOG_LINES_DEFAULT) -> str:
    path = log_file(settings, name)
    text = tail(path, lines=lines)
    return text if text else f"(no log at {path})"
