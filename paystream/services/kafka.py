"""A single-node Apache Kafka (KRaft) from the official Maven Central artifacts.

What ``kafka-server-start.sh`` does is ``java -cp "libs/*" kafka.Kafka
server.properties``; the jars come from ``deploy/kafka/pom.xml``, resolved once
by Maven into a cache keyed by the pom's hash, so later starts are offline.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from paystream.services.process import (
    ServiceError,
    free_port_pair,
    port_open,
    read_pid,
    spawn_detached,
    stop_pid,
    tail,
    wait_until,
)
from paystream.services.status import ServiceStatus

JAVA_MAJOR_MIN = 17
TRANSACTION_ABORT_CHECK_MS = 1_000
BROKER_START_TRIES_MAX = 3
START_TIMEOUT_S = 90.0
MAVEN_TIMEOUT_S = 600.0
METADATA_TIMEOUT_S = 5.0
HEAP_OPTS = ("-Xms256m", "-Xmx1g")
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
    """One broker+controller in ``home``, listening on 127.0.0.1 only."""

    home: Path
    port: int

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

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
            if port_open("127.0.0.1", self.port):
                raise ServiceError(f"port {self.port} is taken by another process")
            java = require_java()
            libs = fetch_jars()
            properties = self._write_config()
            self._format(java, libs, properties)
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
        return port_open("127.0.0.1", self.port) and metadata_ok(self.bootstrap)

    def stop(self) -> None:
        pid = read_pid(self.pid_file)
        if pid is not None:
            stop_pid(pid)
        self.pid_file.unlink(missing_ok=True)

    def status(self) -> ServiceStatus:
        pid = read_pid(self.pid_file)
        healthy = pid is not None and metadata_ok(self.bootstrap)
        return ServiceStatus(
            name="kafka",
            address=self.bootstrap,
            pid=pid,
            version=self.version(),
            healthy=healthy,
        )

    def version(self) -> str | None:
        """The Apache Kafka version the broker reported in its log at start-up."""
        matches = _VERSION_RE.findall(tail(self.log_file, lines=5000))
        return str(matches[-1]) if matches else None

    def _write_config(self) -> Path:
        self.home.mkdir(parents=True, exist_ok=True)
        controller_port = self.port + 1
        settings = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
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
        path = self.home / "server.properties"
        path.write_text("".join(f"{key}={value}\n" for key, value in settings.items()))
        (self.home / "log4j2.properties").write_text(LOG4J2_PROPERTIES)
        return path

    def _format(self, java: str, libs: Path, properties: Path) -> None:
        if (self.home / "data" / "meta.properties").is_file():
            return
        classpath = f"{libs}/*"
        cluster_id = subprocess.run(
            [java, "-cp", classpath, "kafka.tools.StorageTool", "random-uuid"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        result = subprocess.run(
            [
                java, "-cp", classpath, "kafka.tools.StorageTool", "format",
                "-t", cluster_id, "-c", str(properties), "--ignore-formatted",
            ],
            capture_output=True, text=True,
        )  # fmt: skip
        if result.returncode != 0:
            raise ServiceError(f"formatting Kafka storage failed:\n{result.stdout}{result.stderr}")


def start_on_free_ports(home: Path) -> KafkaBroker:
    """Start a broker in ``home`` (wiped first) on free ports of 127.0.0.1.

    Another process may take a port between the check and the start, so a
    failed start is retried on new ports; a failed try leaves nothing behind.
    """
    for attempt in range(BROKER_START_TRIES_MAX):
        broker = KafkaBroker(home=home, port=free_port_pair())
        shutil.rmtree(broker.home, ignore_errors=True)
        try:
            broker.start()
            return broker
        except ServiceError:
            broker.stop()
            if attempt == BROKER_START_TRIES_MAX - 1:
                raise
    raise ServiceError("unreachable: every try returns or raises")


def metadata_ok(bootstrap: str) -> bool:
    """True when a metadata request to ``bootstrap`` succeeds."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    try:
        metadata = admin.list_topics(timeout=METADATA_TIMEOUT_S)
    except KafkaException:
        return False
    return len(metadata.brokers) > 0
