"""Session-scoped real services for the integration tests.

Order of preference, per service: a URL in the environment
(``PAYSTREAM_KAFKA_BOOTSTRAP`` / ``PAYSTREAM_POSTGRES_DSN`` /
``PAYSTREAM_CLICKHOUSE_URL``), then testcontainers when a Docker engine
answers, then paystream's own local launcher in a temporary directory (stopped
when the session ends, also when tests fail). Each session gets its own topic
prefix, Postgres database and ClickHouse database, so runs never see each
other's data.

The local broker lives where ``paystream services up`` looks for it
(``<data_dir>/services/kafka`` on the session's port), so a test can SIGKILL
it and bring it back with the real CLI (:class:`SessionBroker`).

One broker serves the whole session, secured as ``make demo`` runs it: SASL/SCRAM
on its port, the StandardAuthorizer, the platform principal a super user. It also
has the launcher's tests-only PLAINTEXT listener (``KafkaBroker.open_port``: whoever
connects there is ``ANONYMOUS``, a super user). Why: the ~1,200 tests and the
platform processes they start keep connecting without credentials (``kafka_bootstrap``,
``kafka`` and the ``plaintext`` session ``settings`` all name that listener), while the
security tests use the SASL port (``kafka_scram``) of the very broker the rest runs
on, with no second broker to start per session. An external or Docker Kafka is
plaintext: ``kafka_scram`` skips there.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from paystream import services
from paystream.services import keycloak as keycloak_service
from paystream.services.kafka import KafkaBroker, start_on_free_ports
from paystream.services.postgres import EmbeddedPostgres
from paystream.services.process import (
    ServiceError,
    pid_alive,
    read_pid,
    wait_until,
)
from paystream.settings import KafkaConnection, Settings

SESSION_TAG = f"t{uuid.uuid4().hex[:10]}"


@functools.cache
def docker_engine_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=3)
        return bool(client.ping())
    except Exception:  # no engine, no socket, no permission: all mean "no"
        return False


@contextlib.contextmanager
def _kafka(data_dir: Path, docker: bool) -> Iterator[tuple[KafkaConnection, KafkaBroker | None]]:
    """The plaintext connection, and the broker when it is the session's own local one."""
    if url := os.environ.get("PAYSTREAM_KAFKA_BOOTSTRAP"):
        yield KafkaConnection.plaintext(url), None
    elif docker:
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("apache/kafka:4.1.1").with_kraft() as container:
            yield KafkaConnection.plaintext(str(container.get_bootstrap_server())), None
    else:
        broker = _start_local_broker(data_dir)
        try:
            yield broker.open_connection, broker
        finally:
            broker.stop()


def _managed_settings(data_dir: Path, broker: KafkaBroker) -> Settings:
    """What ``paystream services up`` reads from :meth:`SessionBroker.env`."""
    named = {} if broker.username is None else {"kafka_username": broker.username}
    return Settings(
        environment="test",
        data_dir=data_dir,
        kafka_bootstrap=None,
        kafka_port=broker.port,
        kafka_security=broker.security,
        kafka_open_port=broker.open_port,
        **named,
    )


def _start_local_broker(data_dir: Path) -> KafkaBroker:
    """A scram broker with the tests-only open port, where ``paystream services up`` keeps it
    for ``data_dir``, on free ports."""
    local = Settings(data_dir=data_dir, kafka_bootstrap=None)
    return start_on_free_ports(
        local.services_dir / "kafka", security="scram", username=local.kafka_username,
        open_port=True,
    )  # fmt: skip


CLI_TIMEOUT_S = 300.0
"""``services up`` waits for health itself (Kafka: 90 s at most); this bounds the whole command."""
KILL_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class SessionBroker:
    """The session's local broker, as ``paystream services up`` knows it.

    :meth:`kill` SIGKILLs it; :meth:`up` brings it back by running the real
    CLI with the environment under which that CLI finds this very broker
    (same data directory, so the same log dirs, and the same port). Postgres,
    ClickHouse and the session's Keycloak are passed as URLs, so the CLI leaves
    them alone.
    """

    broker: KafkaBroker
    data_dir: Path
    postgres_dsn: str
    clickhouse_url: str
    oidc_issuer: str

    @property
    def pid(self) -> int | None:
        return read_pid(self.broker.pid_file)

    def kill(self) -> int:
        """SIGKILL the broker and wait until it is gone; returns the pid killed."""
        pid = self.pid
        if pid is None:
            raise ServiceError(f"no broker running (pid file {self.broker.pid_file})")
        os.kill(pid, signal.SIGKILL)
        if not wait_until(lambda: not pid_alive(pid), timeout_s=KILL_TIMEOUT_S):
            raise ServiceError(f"broker {pid} still alive {KILL_TIMEOUT_S}s after SIGKILL")
        return pid

    def up(self) -> subprocess.CompletedProcess[str]:
        """``paystream services up``; raises unless it succeeded (it waits for health)."""
        result = self.cli("services", "up")
        if result.returncode != 0:
            raise ServiceError(f"services up failed:\n{result.stdout}{result.stderr}")
        return result

    def status(self) -> subprocess.CompletedProcess[str]:
        return self.cli("services", "status")

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "paystream.cli", *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT_S,
        )

    def env(self) -> dict[str, str]:
        """No PAYSTREAM_* of the caller (no KAFKA_BOOTSTRAP, no settings file): only these.

        The broker's security too, and its tests-only open port: ``services up`` rewrites the
        broker's configuration from these, so it comes back as it was."""
        base = {k: v for k, v in os.environ.items() if not k.startswith("PAYSTREAM_")}
        env = base | {
            "PAYSTREAM_ENVIRONMENT": "test",
            "PAYSTREAM_DATA_DIR": str(self.data_dir),
            "PAYSTREAM_KAFKA_PORT": str(self.broker.port),
            "PAYSTREAM_KAFKA_SECURITY": self.broker.security,
            "PAYSTREAM_POSTGRES_DSN": self.postgres_dsn,
            "PAYSTREAM_CLICKHOUSE_URL": self.clickhouse_url,
            "PAYSTREAM_OIDC_ISSUER": self.oidc_issuer,
        }
        if self.broker.username is not None:
            env["PAYSTREAM_KAFKA_USERNAME"] = self.broker.username
        if self.broker.open_port is not None:
            env["PAYSTREAM_KAFKA_OPEN_PORT"] = str(self.broker.open_port)
        return env


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


def _data_dir(services_home: Path) -> Path:
    return services_home / "data"


@pytest.fixture(scope="session")
def _kafka_service(services_home: Path) -> Iterator[tuple[KafkaConnection, KafkaBroker | None]]:
    with _kafka(_data_dir(services_home), docker_engine_answers()) as service:
        yield service


@pytest.fixture(scope="session")
def kafka(_kafka_service: tuple[KafkaConnection, KafkaBroker | None]) -> KafkaConnection:
    """The session's Kafka without credentials: the local broker's tests-only open port (a
    super user's), or an external / Docker plaintext Kafka."""
    return _kafka_service[0]


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka: KafkaConnection) -> str:
    """Where :func:`kafka` connects (for clients built from a bare address)."""
    return kafka.bootstrap


@pytest.fixture(scope="session")
def kafka_scram(_kafka_service: tuple[KafkaConnection, KafkaBroker | None]) -> KafkaConnection:
    """The session's own broker's SASL/SCRAM port, as the platform principal (a super user);
    skips on an external or Docker Kafka (plaintext)."""
    broker = _kafka_service[1]
    if broker is None or broker.security != "scram":
        pytest.skip("the session's Kafka is external or in Docker: no SASL/SCRAM listener")
    return broker.connection


@pytest.fixture(scope="session")
def session_broker(
    _kafka_service: tuple[KafkaConnection, KafkaBroker | None],
    settings: Settings,
    keycloak: keycloak_service.KeycloakServer,
) -> SessionBroker:
    """The session's own broker, to kill and bring back; skips on an external or Docker one."""
    broker = _kafka_service[1]
    if broker is None:
        pytest.skip("the session's Kafka is external or in Docker, not paystream's own broker")
    if settings.postgres_dsn is None or settings.clickhouse_url is None:
        raise AssertionError("the session's settings name their Postgres and ClickHouse")
    if services.local_broker(_managed_settings(settings.data_dir, broker)) != broker:
        raise AssertionError(f"{broker} is not what services up runs for {settings.data_dir}")
    return SessionBroker(
        broker=broker,
        data_dir=settings.data_dir,
        postgres_dsn=settings.postgres_dsn,
        clickhouse_url=settings.clickhouse_url,
        oidc_issuer=keycloak.issuer,
    )


@pytest.fixture(scope="session")
def postgres_server_dsn(services_home: Path) -> Iterator[str]:
    with _postgres(services_home, docker_engine_answers()) as dsn:
        yield dsn


@pytest.fixture(scope="session")
def postgres_dsn(postgres_server_dsn: str) -> str:
    """A database of this test session's own."""
    return _database_dsn(postgres_server_dsn, f"paystream_{SESSION_TAG}")


@pytest.fixture
def audit_dsn(postgres_server_dsn: str) -> str:
    """A database of this test's own: an audit store holds one run's ledger."""
    return _database_dsn(postgres_server_dsn, f"audit_{uuid.uuid4().hex[:10]}")


@pytest.fixture(scope="session")
def keycloak(services_home: Path) -> Iterator[keycloak_service.KeycloakServer]:
    """The session's Keycloak with the paystream realm (started by the first test that asks)."""
    server = keycloak_service.start_on_free_ports(services_home / "keycloak")
    try:
        yield server
    finally:
        server.stop()


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
    """Settings pointing at this session's services, as a worker would get them (Kafka without
    credentials: the broker's tests-only open port, see the module's docstring)."""
    return Settings(
        environment="test",
        data_dir=_data_dir(services_home),
        kafka_bootstrap=kafka_bootstrap,
        kafka_security="plaintext",
        postgres_dsn=postgres_dsn,
        clickhouse_url=clickhouse_dsn,
        topic_prefix=topic_prefix,
    )


@pytest.fixture
def unique_topic(topic_prefix: str) -> str:
    return f"{topic_prefix}.{uuid.uuid4().hex[:8]}"
