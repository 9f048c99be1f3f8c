"""Session-scoped real services for the integration tests.

Order of preference, per service: a URL in the environment
(``PAYSTREAM_KAFKA_BOOTSTRAP`` / ``PAYSTREAM_POSTGRES_DSN`` /
``PAYSTREAM_CLICKHOUSE_URL``), then testcontainers when a Docker engine
answers, then paystream's own local launcher in a temporary directory (stopped
when the session ends, also when tests fail). Each session gets its own topic
prefix, Postgres database and ClickHouse database, so runs never see each
other's data.
"""

from __future__ import annotations

import contextlib
import functools
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from paystream.services.kafka import KafkaBroker
from paystream.services.postgres import EmbeddedPostgres
from paystream.services.process import ServiceError, free_port, port_open
from paystream.settings import Settings

SESSION_TAG = f"t{uuid.uuid4().hex[:10]}"


@functools.cache
def docker_engine_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=3)
        return bool(client.ping())
    except Exception:  # no engine, no socket, no permission: all mean "no"
        return False


def _free_port_pair() -> int:
    """A port p with p+1 free too (the broker's controller listens on p+1)."""
    for _ in range(50):
        port = free_port()
        if port < 65535 and not port_open("127.0.0.1", port + 1):
            return port
    raise RuntimeError("no free pair of ports")


@contextlib.contextmanager
def _kafka(home: Path, docker: bool) -> Iterator[str]:
    if url := os.environ.get("PAYSTREAM_KAFKA_BOOTSTRAP"):
        yield url
    elif docker:
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("apache/kafka:4.1.1").with_kraft() as container:
            yield str(container.get_bootstrap_server())
    else:
        broker = _start_local_broker(home)
        try:
            yield broker.bootstrap
        finally:
            broker.stop()


BROKER_START_TRIES_MAX = 3


def _start_local_broker(home: Path) -> KafkaBroker:
    """Start a broker on free ports; another process may take a port first, so retry."""
    for attempt in range(BROKER_START_TRIES_MAX):
        broker = KafkaBroker(home=home / f"kafka-{attempt}", port=_free_port_pair())
        try:
            broker.start()
            return broker
        except ServiceError:
            broker.stop()
            if attempt == BROKER_START_TRIES_MAX - 1:
                raise
    raise AssertionError("unreachable")


@contextlib.contextmanager
def _postgres(home: Path, docker: bool) -> Iterator[str]:
    if url := os.environ.get("PAYSTREAM_POSTGRES_DSN"):
        yield url
    elif docker:
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16", driver=None) as container:
            yield str(container.get_connection_url())
    else:
        server = EmbeddedPostgres(home=home / "postgres")
        try:
            yield server.start()
        finally:
            server.stop()


@contextlib.contextmanager
def _clickhouse(home: Path, docker: bool) -> Iterator[str]:
    if url := os.environ.get("PAYSTREAM_CLICKHOUSE_URL"):
        yield url
    elif docker:
        from testcontainers.clickhouse import ClickHouseContainer

        with ClickHouseContainer("clickhouse/clickhouse-server:25.8") as container:
            host = container.get_container_host_ip()
            port = container.get_exposed_port(8123)
            yield f"http://{container.username}:{container.password}@{host}:{port}"
    else:
        yield f"chdb://{home / 'clickhouse'}"


def _database_dsn(server_dsn: str, database: str) -> str:
    """Create ``database`` on the server and return a DSN that selects it."""
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    return psycopg.conninfo.make_conninfo(server_dsn, dbname=database)


@pytest.fixture(scope="session")
def services_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("services")


@pytest.fixture(scope="session")
def kafka_bootstrap(services_home: Path) -> Iterator[str]:
    with _kafka(services_home, docker_engine_answers()) as bootstrap:
        yield bootstrap


@pytest.fixture(scope="session")
def postgres_server_dsn(services_home: Path) -> Iterator[str]:
    with _postgres(services_home, docker_engine_answers()) as dsn:
        yield dsn


@pytest.fixture(scope="session")
def postgres_dsn(postgres_server_dsn: str) -> str:
    """A database of this test session's own."""
    return _database_dsn(postgres_server_dsn, f"paystream_{SESSION_TAG}")


@pytest.fixture(scope="session")
def clickhouse_dsn(services_home: Path) -> Iterator[str]:
    with _clickhouse(services_home, docker_engine_answers()) as dsn:
        yield dsn


@pytest.fixture(scope="session")
def topic_prefix() -> str:
    return f"paystream-{SESSION_TAG}"


@pytest.fixture(scope="session")
def settings(
    services_home: Path,
    kafka_bootstrap: str,
    postgres_dsn: str,
    clickhouse_dsn: str,
    topic_prefix: str,
) -> Settings:
    """Settings pointing at this session's services, as a worker would get them."""
    return Settings(
        environment="test",
        data_dir=services_home / "data",
        kafka_bootstrap=kafka_bootstrap,
        postgres_dsn=postgres_dsn,
        clickhouse_url=clickhouse_dsn,
        topic_prefix=topic_prefix,
    )


@pytest.fixture
def unique_topic(topic_prefix: str) -> str:
    return f"{topic_prefix}.{uuid.uuid4().hex[:8]}"
