"""Every Kafka client starts from one KafkaConnection: what it tells librdkafka, where
``settings.kafka`` takes its credentials from, and what the local broker is configured with.
(The real broker's side: tests/integration/test_kafka_security.py.)"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from paystream.runner import child_env, kafka_env
from paystream.services import local_broker
from paystream.services.kafka import KafkaBroker, _write_private
from paystream.settings import PLATFORM_SECRET_FILE, KafkaConnection, Settings

SCRAM = KafkaConnection(
    bootstrap="127.0.0.1:9", security="scram", username="paystream", password="s3cret"
)


def test_plaintext_says_its_protocol_and_carries_no_credentials() -> None:
    assert KafkaConnection.plaintext("127.0.0.1:9").config() == {
        "bootstrap.servers": "127.0.0.1:9",
        "security.protocol": "plaintext",
    }


def test_scram_authenticates_with_sha_256() -> None:
    assert SCRAM.config() == {
        "bootstrap.servers": "127.0.0.1:9",
        "security.protocol": "sasl_plaintext",
        "sasl.mechanism": "SCRAM-SHA-256",
        "sasl.username": "paystream",
        "sasl.password": "s3cret",
    }


def test_a_config_is_a_copy_callers_add_to() -> None:
    extended = SCRAM.config() | {"group.id": "g"}
    assert "group.id" not in SCRAM.config() and extended["sasl.username"] == "paystream"


@pytest.mark.parametrize(("username", "password"), [(None, "p"), ("u", None), ("", "p")])
def test_scram_without_credentials_is_refused(username: str | None, password: str | None) -> None:
    with pytest.raises(ValueError, match="username and a password"):
        KafkaConnection(bootstrap="h:1", security="scram", username=username, password=password)


def test_the_password_stays_out_of_reprs() -> None:
    assert "s3cret" not in repr(SCRAM)


def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("PAYSTREAM_"):
            monkeypatch.delenv(name)


def test_settings_default_to_scram_as_the_platform_principal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _clean_env(monkeypatch)
    settings = Settings()
    assert (settings.kafka_security, settings.kafka_username) == ("scram", "paystream")


def test_settings_in_plaintext_give_a_plaintext_connection() -> None:
    settings = Settings(kafka_bootstrap="k:9092", kafka_security="plaintext")
    assert settings.kafka == KafkaConnection.plaintext("k:9092")


def test_settings_with_a_configured_broker_and_password(monkeypatch: pytest.MonkeyPatch) -> None:
    _clean_env(monkeypatch)
    monkeypatch.setenv("PAYSTREAM_KAFKA_BOOTSTRAP", "k:9093")
    monkeypatch.setenv("PAYSTREAM_KAFKA_USERNAME", "platform-eu")
    monkeypatch.setenv("PAYSTREAM_KAFKA_PASSWORD", "from-the-vault")
    assert Settings().kafka == KafkaConnection(
        bootstrap="k:9093", security="scram", username="platform-eu", password="from-the-vault"
    )


def test_a_configured_scram_broker_without_password_is_refused() -> None:
    with pytest.raises(ValueError, match="PAYSTREAM_KAFKA_PASSWORD"):
        _ = Settings(kafka_bootstrap="k:9093", kafka_security="scram").kafka


def test_the_local_broker_password_is_the_one_services_up_generated(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, kafka_security="scram", kafka_port=20000)
    with pytest.raises(FileNotFoundError, match="services up"):
        _ = settings.kafka
    home = tmp_path / "services" / "kafka"
    home.mkdir(parents=True)
    (home / PLATFORM_SECRET_FILE).write_text("generated\n")
    assert settings.kafka == KafkaConnection(
        bootstrap="127.0.0.1:20000", security="scram", username="paystream", password="generated"
    )
    assert local_broker(settings).connection == settings.kafka


@pytest.mark.parametrize(
    "named",
    [
        {"kafka_bootstrap": "k:1", "kafka_security": "plaintext"},
        {"kafka_bootstrap": "k:1", "kafka_password": SecretStr("pw"), "kafka_username": "u"},
        {"kafka_port": 20001, "kafka_security": "scram"},
    ],
    ids=["plaintext", "configured-scram", "local-scram"],
)
def test_a_child_process_gets_the_same_connection(
    named: dict[str, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What child_env passes rebuilds ``settings.kafka`` in the child (the local broker's
    password read from the same data directory, not passed)."""
    _clean_env(monkeypatch)
    settings = Settings(data_dir=tmp_path, **named)  # type: ignore[arg-type]
    home = tmp_path / "services" / "kafka"
    home.mkdir(parents=True)
    (home / PLATFORM_SECRET_FILE).write_text("generated\n")
    env = child_env(settings, log_level="warn")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert Settings().kafka == settings.kafka
    passed = "PAYSTREAM_KAFKA_PASSWORD" in kafka_env(settings)
    assert passed == (settings.kafka_password is not None)


def test_the_open_port_is_for_tests_of_a_scram_broker_only() -> None:
    with pytest.raises(ValidationError, match="for tests"):
        Settings(kafka_open_port=20002)
    with pytest.raises(ValidationError, match="scram broker"):
        Settings(environment="test", kafka_security="plaintext", kafka_open_port=20002)
    assert Settings(environment="test", kafka_open_port=20002).kafka_open_port == 20002


# --- the local broker's configuration (the running broker: tests/integration) ----------


def _config(broker: KafkaBroker, secret: str | None) -> dict[str, str]:
    return broker._listener_config(broker.port + 1, secret)


def test_a_plaintext_broker_keeps_its_one_plaintext_listener(tmp_path: Path) -> None:
    broker = KafkaBroker(home=tmp_path, port=20010)
    assert _config(broker, None) == {
        "listeners": "PLAINTEXT://127.0.0.1:20010,CONTROLLER://127.0.0.1:20011",
        "advertised.listeners": "PLAINTEXT://127.0.0.1:20010",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
    }
    assert broker._platform_secret() is None
    assert broker.connection == KafkaConnection.plaintext("127.0.0.1:20010")


def test_a_scram_broker_authenticates_and_authorizes(tmp_path: Path) -> None:
    broker = KafkaBroker(home=tmp_path, port=20010, security="scram", username="paystream")
    config = _config(broker, "pw")
    assert config["listeners"] == "SASL_PLAINTEXT://127.0.0.1:20010,CONTROLLER://127.0.0.1:20011"
    assert config["advertised.listeners"] == "SASL_PLAINTEXT://127.0.0.1:20010"
    assert config["inter.broker.listener.name"] == "SASL_PLAINTEXT"
    assert config["sasl.enabled.mechanisms"] == "SCRAM-SHA-256"
    jaas = config["listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config"]
    assert 'username="paystream" password="pw"' in jaas
    assert config["authorizer.class.name"].endswith("StandardAuthorizer")
    assert config["allow.everyone.if.no.acl.found"] == "false"
    assert config["super.users"] == "User:paystream;User:ANONYMOUS"
    assert "OPEN" not in config["listener.security.protocol.map"]


def test_the_tests_only_open_port_is_a_second_plaintext_listener(tmp_path: Path) -> None:
    broker = KafkaBroker(
        home=tmp_path, port=20010, security="scram", username="paystream", open_port=20020
    )
    config = _config(broker, "pw")
    assert config["listeners"] == (
        "SASL_PLAINTEXT://127.0.0.1:20010,OPEN://127.0.0.1:20020,CONTROLLER://127.0.0.1:20011"
    )
    assert config["listener.security.protocol.map"].endswith(",OPEN:PLAINTEXT")
    assert broker.open_connection == KafkaConnection.plaintext("127.0.0.1:20020")
    with pytest.raises(ValueError, match="scram broker"):
        KafkaBroker(home=tmp_path, port=20010, open_port=20020)


def test_the_platform_secret_is_generated_once_and_private(tmp_path: Path) -> None:
    broker = KafkaBroker(home=tmp_path / "kafka", port=20010, security="scram", username="p")
    first = broker._platform_secret()
    assert first is not None and len(first) >= 40
    assert broker._platform_secret() == first
    assert stat.S_IMODE(broker.secret_file.stat().st_mode) == 0o600
    assert broker.connection.password == first


def test_a_home_formatted_without_scram_is_refused_in_scram(tmp_path: Path) -> None:
    from paystream.services.process import ServiceError

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "meta.properties").write_text("cluster.id=x\n")
    broker = KafkaBroker(home=tmp_path, port=20010, security="scram", username="paystream")
    with pytest.raises(ServiceError, match="formatted without SCRAM"):
        broker._platform_secret()
    assert not broker.secret_file.exists()


def test_private_files_are_0600_even_when_they_existed(tmp_path: Path) -> None:
    path = tmp_path / "server.properties"
    path.write_text("old")
    path.chmod(0o644)
    _write_private(path, "new")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_text() == "new"
