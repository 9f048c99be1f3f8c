"""`paystream services up|status|down` on a data directory of its own, in both Kafka
security modes (``scram`` is the default, what ``make demo`` runs)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from paystream.services.kafka import metadata_ok
from paystream.services.keycloak import KeycloakServer
from paystream.services.process import free_port_pair, pid_alive
from paystream.settings import PLATFORM_SECRET_FILE, KafkaConnection, Security, Settings

pytestmark = pytest.mark.integration


EXTERNAL_URLS = (
    "PAYSTREAM_KAFKA_BOOTSTRAP", "PAYSTREAM_POSTGRES_DSN", "PAYSTREAM_CLICKHOUSE_URL",
    "PAYSTREAM_OIDC_ISSUER", "PAYSTREAM_KAFKA_SECURITY", "PAYSTREAM_KAFKA_USERNAME",
    "PAYSTREAM_KAFKA_PASSWORD", "PAYSTREAM_KAFKA_OPEN_PORT",
)  # fmt: skip


def _paystream(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI on the embedded defaults (external URLs and Kafka credentials of the
    session removed)."""
    base = {k: v for k, v in os.environ.items() if k not in EXTERNAL_URLS}
    return subprocess.run(
        [sys.executable, "-m", "paystream.cli", *args],
        env=base | env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _pids(text: str) -> list[int]:
    return [
        int(word[4:]) for word in text.split() if word.startswith("pid=") and word[4:].isdigit()
    ]


def test_up_twice_is_harmless_and_down_leaves_no_process(tmp_path: Path) -> None:
    """Every service local, Kafka in its default mode (scram, as ``make demo`` runs it)."""
    env = {
        "PAYSTREAM_DATA_DIR": str(tmp_path / "data"),
        "PAYSTREAM_KAFKA_PORT": str(free_port_pair()),
        "PAYSTREAM_KEYCLOAK_PORT": str(free_port_pair()),
    }
    try:
        first = _paystream(env, "services", "up")
        assert first.returncode == 0, first.stderr
        second = _paystream(env, "services", "up")
        assert second.returncode == 0, second.stderr
        status = _paystream(env, "services", "status")
        assert status.returncode == 0, status.stdout + status.stderr
        lines = {line.split()[0]: line for line in status.stdout.splitlines()}
        assert "healthy" in lines["kafka"] and "version=4." in lines["kafka"]
        assert "healthy" in lines["postgres"] and "version=16" in lines["postgres"]
        assert "healthy" in lines["clickhouse"]
        assert "healthy" in lines["keycloak"] and "/realms/paystream" in lines["keycloak"]
        assert "oidc       http://127.0.0.1:" in first.stdout
        pids = _pids(status.stdout)
        assert len(pids) == 3  # broker, postmaster, Keycloak; ClickHouse is in-process
        _check_kafka_security(tmp_path / "data", int(env["PAYSTREAM_KAFKA_PORT"]), "scram")
    finally:
        down = _paystream(env, "services", "down")
    assert down.returncode == 0, down.stderr
    assert not [pid for pid in pids if pid_alive(pid)]
    leftovers = subprocess.run(
        ["pgrep", "-f", str(tmp_path)], capture_output=True, text=True
    ).stdout.split()
    assert leftovers == []
    after = _paystream(env, "services", "status")
    assert after.returncode == 1 and "DOWN" in after.stdout


def test_a_plaintext_broker_up_status_down(
    tmp_path: Path, postgres_dsn: str, keycloak: KeycloakServer
) -> None:
    """``PAYSTREAM_KAFKA_SECURITY=plaintext``: Kafka is local, the session's Postgres and
    Keycloak are passed as URLs (so the test stays short; ClickHouse is embedded, in the
    test's data directory); a scram start of the same home is then refused: it has no SCRAM
    user, and its topics are not silently dropped."""
    port = free_port_pair()
    env = {
        "PAYSTREAM_DATA_DIR": str(tmp_path / "data"),
        "PAYSTREAM_KAFKA_PORT": str(port),
        "PAYSTREAM_KAFKA_SECURITY": "plaintext",
        "PAYSTREAM_POSTGRES_DSN": postgres_dsn,
        "PAYSTREAM_OIDC_ISSUER": keycloak.issuer,
    }
    try:
        up = _paystream(env, "services", "up")
        assert up.returncode == 0, up.stderr
        status = _paystream(env, "services", "status")
        assert status.returncode == 0, status.stdout + status.stderr
        kafka = next(line for line in status.stdout.splitlines() if line.startswith("kafka"))
        assert " healthy " in kafka and f"127.0.0.1:{port}" in kafka, kafka
        pids = _pids(kafka)
        _check_kafka_security(tmp_path / "data", port, "plaintext")
    finally:
        down = _paystream(env, "services", "down")
    assert down.returncode == 0, down.stderr
    assert len(pids) == 1 and not pid_alive(pids[0])
    scram = _paystream(env | {"PAYSTREAM_KAFKA_SECURITY": "scram"}, "services", "up")
    assert scram.returncode != 0 and "formatted without SCRAM users" in scram.stderr, scram


def _check_kafka_security(data_dir: Path, port: int, security: Security) -> None:
    """What the platform's settings connect with is what the broker accepts, and nothing else:
    with scram, a private generated password, no access without credentials or with others."""
    settings = Settings(
        data_dir=data_dir, kafka_bootstrap=None, kafka_port=port, kafka_security=security
    )
    assert metadata_ok(settings.kafka)
    unauthenticated = KafkaConnection.plaintext(settings.bootstrap)
    secret = data_dir / "services" / "kafka" / PLATFORM_SECRET_FILE
    if security == "plaintext":
        assert metadata_ok(unauthenticated) and not secret.exists()
        return
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert stat.S_IMODE((secret.parent / "server.properties").stat().st_mode) == 0o600
    assert settings.kafka.password == secret.read_text().strip()
    assert not metadata_ok(unauthenticated)
    wrong = KafkaConnection(
        bootstrap=settings.bootstrap, security="scram", username="paystream", password="guess"
    )
    assert not metadata_ok(wrong)
