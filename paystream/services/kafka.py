"""A single-node Apache Kafka (KRaft) from the official Maven Central artifacts.

What ``kafka-server-start.sh`` does is ``java -cp "libs/*" kafka.Kafka
server.properties``; the jars come from ``deploy/kafka/pom.xml``, resolved once
by Maven into a cache keyed by the pom's hash, so later starts are offline.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from paystream.services.process import (
    ServiceError,
    free_port,
    free_port_pair,
    port_open,
    read_pid,
    spawn_detached,
    stop_pid,
    tail,
    wait_until,
)
from paystream.services.status import ServiceStatus
from paystream.settings import PLATFORM_SECRET_FILE, SCRAM_MECHANISM, KafkaConnection, Security

JAVA_MAJOR_MIN = 17
TRANSACTION_ABORT_CHECK_MS = 1_000
BROKER_START_TRIES_MAX = 3
START_TIMEOUT_S = 90.0
MAVEN_TIMEOUT_S = 600.0
METADATA_TIMEOUT_S = 5.0
HEAP_OPTS = ("-Xms256m", "-Xmx1g")
SECRET_BYTES: Final = 32
"""Entropy of the platform principal's generated SCRAM password (``secrets.token_urlsafe``)."""
STANDARD_AUTHORIZER: Final = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
_VERSION_RE = re.compile(r"Kafka version: (\S+)")
_POM = Path(__file__).resolve().parents[2] / "deploy" / "kafka" / "pom.xml"

LOG4J2_PROPERTIES = """\
status = warn
appender.file.type = Console
appender.file.name = STDOUT
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.file.ref = STDOUT
logger.appinfo.name = org.apache.kafka.common.utils.AppInfoParser
logger.appinfo.level = info
logger.raft.name = kafka.server.KafkaRaftServer
logger.raft.level = info
"""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "paystream"


def pom_path() -> Path:
    if not _POM.is_file():
        raise ServiceError(f"Kafka pom not found at {_POM}; run paystream from its source tree")
    return _POM


def java_major(java: str) -> int:
    """The JDK's major version from ``java -version``."""
    result = subprocess.run([java, "-version"], capture_output=True, text=True, check=True)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', result.stderr)
    if match is None:
        raise ServiceError(f"cannot read the Java version from: {result.stderr.strip()}")
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def require_java() -> str:
    java = shutil.which("java")
    if java is None:
        raise ServiceError(
            "java not found: Kafka needs a JDK 17 or newer "
            "(Debian: apt-get install openjdk-17-jre-headless)"
        )
    major = java_major(java)
    if major < JAVA_MAJOR_MIN:
        raise ServiceError(f"java {major} found; Kafka 4 needs Java {JAVA_MAJOR_MIN} or newer")
    return java


def fetch_jars() -> Path:
    """Resolve the broker's jars with Maven once; return the ``libs`` directory."""
    pom = pom_path()
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()[:16]
    libs = cache_dir() / f"kafka-{digest}" / "libs"
    marker = libs.parent / "complete"
    if marker.is_file():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ServiceError(
            "mvn not found: Maven fetches Kafka's jars once (Debian: apt-get install maven)"
        )
    print(f"fetching Apache Kafka jars with Maven into {libs} (once) ...", flush=True)
    shutil.rmtree(libs, ignore_errors=True)
    command = [
        mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
        "-DincludeScope=runtime", f"-DoutputDirectory={libs}",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=MAVEN_TIMEOUT_S)
    if result.returncode != 0:
        raise ServiceError(f"Maven could not fetch Kafka:\n{result.stdout}\n{result.stderr}")
    marker.write_text(digest)
    return libs


@dataclass(frozen=True, slots=True)
class KafkaBroker:
    """One broker+controller in ``home``, listening on 127.0.0.1 only.

    ``plaintext``: clients connect on ``port`` unauthenticated and may do anything.
    ``scram``: clients on ``port`` authenticate with SASL/SCRAM-SHA-256 and the
    StandardAuthorizer allows nothing without an ACL, except to the super users: the
    platform principal ``username`` (its password generated once per home, before the
    first format, into :attr:`secret_file`) and ``ANONYMOUS``, the principal of the
    PLAINTEXT controller listener on ``port + 1`` (loopback only, like every listener).
    """

    home: Path
    port: int
    security: Security = "plaintext"
    username: str | None = None
    """The platform's principal (``User:<username>``); required with ``scram``."""
    open_port: int | None = None
    """TESTS ONLY, NEVER FOR A DEPLOYMENT: with ``scram``, a second client listener on
    127.0.0.1:<open_port>, PLAINTEXT, where whoever connects is ``ANONYMOUS``, a super user.
    It lets a test session's platform processes and test clients use one scram broker
    unauthenticated while the security tests use the SASL port (tests/conftest.py)."""

    def __post_init__(self) -> None:
        if self.security == "scram" and not self.username:
            raise ValueError("a scram broker needs the platform's username")
        if self.open_port is not None and self.security != "scram":
            raise ValueError("open_port is a second listener of a scram broker (tests only)")

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def secret_file(self) -> Path:
        """The platform principal's SCRAM password (0600), for ``scram``."""
        return self.home / PLATFORM_SECRET_FILE

    @property
    def connection(self) -> KafkaConnection:
        """How the platform connects on ``port`` (as its principal with ``scram``)."""
        if self.security == "plaintext":
            return KafkaConnection.plaintext(self.bootstrap)
        return KafkaConnection(
            bootstrap=self.bootstrap,
            security="scram",
            username=self.username,
            password=self.secret_file.read_text().strip(),
        )

    @property
    def open_connection(self) -> KafkaConnection:
        """The tests-only PLAINTEXT listener (a super user's connection without credentials)."""
        if self.open_port is None:
            raise ValueError("this broker has no open port")
        return KafkaConnection.plaintext(f"127.0.0.1:{self.open_port}")

    @property
    def pid_file(self) -> Path:
        return self.home / "kafka.pid"

    @property
    def log_file(self) -> Path:
        return self.home / "kafka.log"

    def start(self) -> None:
        """Idempotent: a running broker is left alone; waits until it answers."""
        pid = read_pid(self.pid_file)
        if pid is None:
            for port in self._client_ports():
                if port_open("127.0.0.1", port):
                    raise ServiceError(f"port {port} is taken by another process")
            java = require_java()
            libs = fetch_jars()
            secret = self._platform_secret()
            properties = self._write_config(secret)
            self._format(java, libs, properties, secret)
            pid = spawn_detached(
                [
                    java, *HEAP_OPTS, "-XX:+UseG1GC", "-Djava.awt.headless=true",
                    f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
                    "-cp", f"{libs}/*", "kafka.Kafka", str(properties),
                ],
                log_file=self.log_file, pid_file=self.pid_file, cwd=self.home,
            )  # fmt: skip
        if not wait_until(lambda: self._ready(pid), timeout_s=START_TIMEOUT_S):
            raise ServiceError(f"Kafka did not become ready:\n{tail(self.log_file, lines=30)}")

    def _ready(self, pid: int) -> bool:
        if read_pid(self.pid_file) != pid:
            raise ServiceError(f"Kafka exited during start-up:\n{tail(self.log_file, lines=30)}")
        return all(port_open("127.0.0.1", port) for port in self._client_ports()) and (
            metadata_ok(self.connection)
        )

    def _client_ports(self) -> list[int]:
        return [self.port] if self.open_port is None else [self.port, self.open_port]

    def stop(self) -> None:
        pid = read_pid(self.pid_file)
        if pid is not None:
            stop_pid(pid)
        self.pid_file.unlink(missing_ok=True)

    def status(self) -> ServiceStatus:
        pid = read_pid(self.pid_file)
        healthy = pid is not None and self._answers()
        return ServiceStatus(
            name="kafka",
            address=self.bootstrap,
            pid=pid,
            version=self.version(),
            healthy=healthy,
            detail=f"SASL/SCRAM as {self.username}" if self.security == "scram" else "",
        )

    def _answers(self) -> bool:
        """A metadata request as the platform succeeds (False without a platform secret)."""
        if self.security == "scram" and not self.secret_file.is_file():
            return False
        return metadata_ok(self.connection)

    def _platform_secret(self) -> str | None:
        """The platform's password with ``scram``: generated once per home, before the first
        format (which adds its SCRAM credential); a home formatted without one is refused."""
        if self.security == "plaintext":
            return None
        if self.secret_file.is_file():
            return self.secret_file.read_text().strip()
        if (self.home / "data" / "meta.properties").is_file():
            raise ServiceError(
                f"{self.home} was formatted without SCRAM users (plaintext); run with"
                " PAYSTREAM_KAFKA_SECURITY=plaintext, or stop it and remove that directory"
                " (its topics with it) to start afresh with scram"
            )
        self.home.mkdir(parents=True, exist_ok=True)
        secret = secrets.token_urlsafe(SECRET_BYTES)
        _write_private(self.secret_file, f"{secret}\n")
        return secret

    def version(self) -> str | None:
        """The Apache Kafka version the broker reported in its log at start-up."""
        matches = _VERSION_RE.findall(tail(self.log_file, lines=5000))
        return str(matches[-1]) if matches else None

    def _write_config(self, secret: str | None) -> Path:
        self.home.mkdir(parents=True, exist_ok=True)
        controller_port = self.port + 1
        settings = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
            **self._listener_config(controller_port, secret),
            "log.dirs": str(self.home / "data"),
            "num.partitions": "8",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "8",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "8",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # Check for timed-out transactions every second (Kafka's default: 10 s): a
            # worker killed mid-batch and not restarted holds its partitions' new owner
            # up to transaction.timeout.ms plus this (docs/benchmarks.md, "Failover").
            "transaction.abort.timed.out.transaction.cleanup.interval.ms": str(
                TRANSACTION_ABORT_CHECK_MS
            ),
            "auto.create.topics.enable": "true",
            "log.retention.hours": "-1",
        }
        path = self.home / "server.properties"  # holds the platform's password with scram
        _write_private(path, "".join(f"{key}={value}\n" for key, value in settings.items()))
        (self.home / "log4j2.properties").write_text(LOG4J2_PROPERTIES)
        return path

    def _listener_config(self, controller_port: int, secret: str | None) -> dict[str, str]:
        """Listeners and, with ``scram``, authentication and authorization."""
        controller = f"CONTROLLER://127.0.0.1:{controller_port}"
        if secret is None:
            return {
                "listeners": f"PLAINTEXT://127.0.0.1:{self.port},{controller}",
                "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
                "controller.listener.names": "CONTROLLER",
                "inter.broker.listener.name": "PLAINTEXT",
                "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            }
        clients = [f"SASL_PLAINTEXT://127.0.0.1:{self.port}"]
        protocols = "CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT"
        if self.open_port is not None:  # tests only: see the field's docstring
            clients.append(f"OPEN://127.0.0.1:{self.open_port}")
            protocols += ",OPEN:PLAINTEXT"
        jaas = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required"
            f' username="{self.username}" password="{secret}";'
        )
        return {
            "listeners": ",".join([*clients, controller]),
            "advertised.listeners": ",".join(clients),
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "SASL_PLAINTEXT",
            "listener.security.protocol.map": protocols,
            "sasl.enabled.mechanisms": SCRAM_MECHANISM,
            "sasl.mechanism.inter.broker.protocol": SCRAM_MECHANISM,
            f"listener.name.sasl_plaintext.{SCRAM_MECHANISM.lower()}.sasl.jaas.config": jaas,
            "authorizer.class.name": STANDARD_AUTHORIZER,
            "allow.everyone.if.no.acl.found": "false",
            # ANONYMOUS: the controller listener's principal (and the tests-only open port's).
            "super.users": f"User:{self.username};User:ANONYMOUS",
        }

    def _format(self, java: str, libs: Path, properties: Path, secret: str | None) -> None:
        if (self.home / "data" / "meta.properties").is_file():
            return
        classpath = f"{libs}/*"
        cluster_id = subprocess.run(
            [java, "-cp", classpath, "kafka.tools.StorageTool", "random-uuid"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        scram_users = (
            [] if secret is None
            else ["--add-scram", f"{SCRAM_MECHANISM}=[name={self.username},password={secret}]"]
        )  # fmt: skip
        result = subprocess.run(
            [
                java, "-cp", classpath, "kafka.tools.StorageTool", "format",
                "-t", cluster_id, "-c", str(properties), "--ignore-formatted", *scram_users,
            ],
            capture_output=True, text=True,
        )  # fmt: skip
        if result.returncode != 0:
            raise ServiceError(f"formatting Kafka storage failed:\n{result.stdout}{result.stderr}")


def start_on_free_ports(
    home: Path, *, security: Security = "plaintext", username: str | None = None,
    open_port: bool = False,
) -> KafkaBroker:  # fmt: skip
    """Start a broker in ``home`` (wiped first) on free ports of 127.0.0.1.

    Another process may take a port between the check and the start, so a
    failed start is retried on new ports; a failed try leaves nothing behind.
    ``open_port`` (tests only): a scram broker's extra PLAINTEXT listener, see
    :attr:`KafkaBroker.open_port`.
    """
    for attempt in range(BROKER_START_TRIES_MAX):
        port = free_port_pair()
        broker = KafkaBroker(
            home=home, port=port, security=security, username=username,
            open_port=_free_port_besides(port) if open_port else None,
        )  # fmt: skip
        shutil.rmtree(broker.home, ignore_errors=True)
        try:
            broker.start()
            return broker
        except ServiceError:
            broker.stop()
            if attempt == BROKER_START_TRIES_MAX - 1:
                raise
    raise ServiceError("unreachable: every try returns or raises")


def _free_port_besides(pair: int) -> int:
    """A free port that is not one of the pair ``pair``, ``pair + 1``."""
    for _ in range(BROKER_START_TRIES_MAX):
        port = free_port()
        if port not in (pair, pair + 1):
            return port
    raise ServiceError(f"no free port besides {pair} and {pair + 1}")


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (0600 from the first byte)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(path, 0o600)  # an existing file keeps its mode through O_CREAT


def metadata_ok(kafka: KafkaConnection) -> bool:
    """True when a metadata request to ``kafka`` succeeds (authenticated with ``scram``)."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(kafka.config() | {"log_level": 0})
    try:
        metadata = admin.list_topics(timeout=METADATA_TIMEOUT_S)
    except KafkaException:
        return False
    return len(metadata.brokers) > 0
