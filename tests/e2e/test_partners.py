"""Partners on a SASL/SCRAM broker with ACLs: onboarding, the fan-out, and a partner's side.

Real Kafka (the session broker's SCRAM listener, StandardAuthorizer), Keycloak, Postgres
and HTTP. The partner's side uses only what a partner has: confluent-kafka with the stock
``AvroDeserializer`` pointed at the API's registry endpoint, and Debian's ``kcat``. Events
are the workers' own format, produced here by the platform's principal (the fan-out is what
is tested, not the workers), some in a transaction that aborts; the fan-out runs as a
``paystream partners fanout`` process and is SIGKILLed once in the middle.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import confluent_kafka
import httpx
import jwt
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext
from pydantic import SecretStr

from paystream import cli
from paystream.api.app import create_app
from paystream.ledger import Event
from paystream.partners import client_config, onboarding
from paystream.partners.onboarding import Credentials
from paystream.services.keycloak import KeycloakServer
from paystream.services.process import pid_alive, wait_until
from paystream.settings import KafkaConnection, Settings
from paystream.topology.avro import AvroSerde
from paystream.topology.registry import registry_from_url
from paystream.topology.topics import Topics, ensure_topics, partner_topic
from tests.support.api import HTTP_TIMEOUT_S, bearer, serving

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EVENTS_PER_PARTNER = 60
PAYMENTS_PER_PARTNER = 12
WAIT_S = 90.0
POLL_S = 0.5
AUTH_WAIT_S = 20.0


@dataclass(frozen=True)
class Onboarded:
    settings: Settings
    acme: Credentials
    globex: Credentials


@pytest.fixture(scope="module")
def scram_settings(settings: Settings, kafka_scram: KafkaConnection) -> Settings:
    """The session's settings, as the platform's principal on the SCRAM listener, with topics
    of this module's own."""
    if kafka_scram.password is None or kafka_scram.username is None:
        raise AssertionError("the SCRAM fixture names the platform's principal")
    return settings.model_copy(
        update={
            "kafka_security": "scram",
            "kafka_bootstrap": kafka_scram.bootstrap,
            "kafka_username": kafka_scram.username,
            "kafka_password": SecretStr(kafka_scram.password),
            "topic_prefix": f"{settings.topic_prefix}-p{uuid.uuid4().hex[:6]}",
        }
    )


@pytest.fixture(scope="module")
def onboarded(scram_settings: Settings, keycloak: KeycloakServer) -> Onboarded:
    ensure_topics(scram_settings.kafka, Topics.from_settings(scram_settings))
    tag = uuid.uuid4().hex[:6]

    def add(name: str) -> Credentials:
        return onboarding.add(
            scram_settings, keycloak, partner_id=f"{name}-{tag}", name=name.title(),
            contact_email=f"ops@{name}.example", webhook_url=None,
        )  # fmt: skip

    return Onboarded(scram_settings, add("acme"), add("globex"))


@pytest.fixture(scope="module")
def api(settings: Settings, scram_settings: Settings, keycloak: KeycloakServer) -> Iterator[str]:
    """The API (the registry endpoint reads the data directory's schemas)."""
    dsn = settings.postgres_dsn
    if dsn is None:
        raise AssertionError("the session's settings name their Postgres")
    with serving(create_app(scram_settings, issuer=keycloak.issuer, dsn=dsn)) as url:
        yield url


def event(partner_id: str, payment: int, step: int) -> Event:
    return Event(
        event_id=f"ev-{partner_id}-{payment}-{step}",
        payment_id=f"pay-{partner_id}-{payment}",
        type="Completed" if step % 2 else "Debited",
        command_type="Transfer",
        partner_id=partner_id,
        account_id=f"acc-{partner_id}",
        issued_at_ms=1_700_000_000_000 + step,
        amount_minor=100 + step,
        currency="EUR",
    )


def produce(settings: Settings, events: list[Event], *, commit: bool) -> None:
    """Events as a worker writes them: one transaction, keyed by payment id."""
    topics = Topics.from_settings(settings)
    serde = AvroSerde(
        registry_from_url(settings.schema_registry_url, settings.data_dir),
        topics=topics.payloads(),
    )
    producer = Producer(
        settings.kafka.config()
        | {
            "transactional.id": f"test-events-{uuid.uuid4().hex[:8]}",
            "partitioner": "murmur2_random",
        }
    )
    producer.init_transactions(30)
    producer.begin_transaction()
    for item in events:
        producer.produce(
            topics.events, key=item.payment_id.encode(), value=serde.encode_event(item)
        )
    if commit:
        producer.commit_transaction(30)
    else:
        producer.flush(30)
        producer.abort_transaction(30)


def events_for(partner_id: str, steps: range) -> list[Event]:
    return [event(partner_id, step % PAYMENTS_PER_PARTNER, step) for step in steps]


@contextlib.contextmanager
def fanout_process(settings: Settings, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYSTREAM_")} | {
        "PAYSTREAM_ENVIRONMENT": "test",
        "PAYSTREAM_DATA_DIR": str(settings.data_dir),
        "PAYSTREAM_KAFKA_BOOTSTRAP": settings.bootstrap,
        "PAYSTREAM_KAFKA_SECURITY": "scram",
        "PAYSTREAM_KAFKA_USERNAME": settings.kafka_username,
        "PAYSTREAM_KAFKA_PASSWORD": settings.kafka.password or "",
        "PAYSTREAM_TOPIC_PREFIX": settings.topic_prefix,
    }
    log = (tmp_path / f"fanout-{uuid.uuid4().hex[:6]}.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "paystream.cli", "partners", "fanout", "--metrics-port", "0"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(30)
        log.close()


def partner_consumer(
    credentials: Credentials, bootstrap: str, *, group: str | None = None, **extra: Any
) -> tuple[Consumer, list[KafkaError]]:
    """A consumer as the partner configures it from the printout; its client errors."""
    errors: list[KafkaError] = []
    config = client_config.consumer_config(credentials, bootstrap) | {
        "group.id": group or f"{credentials.group_prefix}{uuid.uuid4().hex[:6]}",
        "error_cb": errors.append,
        "enable.auto.commit": False,
    }
    return Consumer(config | extra), errors


def read_all(consumer: Consumer, topic: str, expected: int) -> list[Any]:
    consumer.subscribe([topic])
    found: list[Any] = []
    deadline = time.monotonic() + WAIT_S
    while len(found) < expected and time.monotonic() < deadline:
        message = consumer.poll(POLL_S)
        if message is None:
            continue
        if message.error() is not None:
            raise AssertionError(f"partner read failed: {message.error()}")
        found.append(message)
    # nothing more than expected arrives
    extra = consumer.poll(3.0)
    if extra is not None and extra.error() is None:
        found.append(extra)
    consumer.close()
    return found


def test_each_partner_gets_its_committed_events_exactly_once_through_a_crash(
    onboarded: Onboarded, api: str, tmp_path: Path
) -> None:
    settings = onboarded.settings
    acme, globex = onboarded.acme.partner_id, onboarded.globex.partner_id
    first = range(0, EVENTS_PER_PARTNER // 2)
    second = range(EVENTS_PER_PARTNER // 2, EVENTS_PER_PARTNER)
    produce(settings, events_for(acme, first) + events_for(globex, first), commit=True)
    produce(settings, events_for(acme, range(1000, 1010)), commit=False)  # aborted: never seen
    produce(settings, events_for("@ops", range(5)), commit=True)  # no topic: skipped
    with fanout_process(settings, tmp_path) as process:
        assert wait_until(lambda: _count(onboarded.acme, settings) > 0, timeout_s=WAIT_S)
        process.send_signal(signal.SIGKILL)
        process.wait(30)
        assert not pid_alive(process.pid)
    produce(settings, events_for(acme, second) + events_for(globex, second), commit=True)
    with fanout_process(settings, tmp_path):
        done = wait_until(
            lambda: (
                _count(onboarded.acme, settings) >= EVENTS_PER_PARTNER
                and _count(onboarded.globex, settings) >= EVENTS_PER_PARTNER
            ),
            timeout_s=WAIT_S,
        )
        assert done, "the fan-out did not forward every event"

    deserializer = AvroDeserializer(SchemaRegistryClient({"url": api}))
    consumer, errors = partner_consumer(onboarded.acme, settings.bootstrap)
    messages = read_all(consumer, onboarded.acme.topic, EVENTS_PER_PARTNER)
    assert not errors
    decoded = [
        deserializer(m.value(), SerializationContext(m.topic(), MessageField.VALUE))
        for m in messages
    ]
    ids = Counter(d["event_id"] for d in decoded)
    assert len(decoded) == EVENTS_PER_PARTNER and set(ids.values()) == {1}
    assert {d["partner_id"] for d in decoded} == {acme}
    assert ids.keys() == {e.event_id for e in events_for(acme, range(EVENTS_PER_PARTNER))}
    by_key: dict[bytes, list[int]] = defaultdict(list)
    for message, body in zip(messages, decoded, strict=True):
        assert message.key() == body["payment_id"].encode()
        by_key[message.key()].append(body["issued_at_ms"])
    assert all(times == sorted(times) for times in by_key.values()), "per-key order kept"


def kcat_env(tmp_path: Path) -> dict[str, str]:
    """Debian 12's kcat 1.7.1 runs on Debian's librdkafka 2.0.2, whose SCRAM sends the client
    nonce twice; Kafka 4 checks it strictly (RFC 5802) and refuses every login (fixed in
    librdkafka 2.6.1, confluentinc/librdkafka#4895). The same kcat on the librdkafka that
    confluent-kafka's wheel ships (same soname, same ABI) logs in."""
    libs = Path(confluent_kafka.__file__).resolve().parents[1] / "confluent_kafka.libs"
    bundled = sorted(libs.glob("librdkafka*.so.1"))
    if not bundled:
        pytest.fail(f"no librdkafka in {libs}")
    (tmp_path / "librdkafka.so.1").symlink_to(bundled[0])
    return os.environ | {"LD_LIBRARY_PATH": str(tmp_path)}


def test_kcat_with_sasl_reads_the_partners_topic(onboarded: Onboarded, tmp_path: Path) -> None:
    kcat = shutil.which("kcat")
    if kcat is None:
        pytest.fail("kcat is not installed (make test installs Debian's kcat)")
    settings = onboarded.settings
    produce(settings, events_for(onboarded.globex.partner_id, range(2000, 2003)), commit=True)
    assert wait_until(lambda: _count(onboarded.globex, settings) > 0, timeout_s=WAIT_S)
    command = client_config.kcat_command(onboarded.globex, settings.bootstrap)
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=WAIT_S, env=kcat_env(tmp_path)
    )
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert lines and all(onboarded.globex.topic in line for line in lines)
    assert all(f"key=pay-{onboarded.globex.partner_id}-" in line for line in lines)


def _count(credentials: Credentials, settings: Settings) -> int:
    """Committed records on the partner's topic, read to its end as the platform."""
    consumer = Consumer(
        settings.kafka.config()
        | {"group.id": f"count-{uuid.uuid4().hex[:6]}", "isolation.level": "read_committed",
           "enable.partition.eof": True, "enable.auto.commit": False}
    )  # fmt: skip
    try:
        metadata = consumer.list_topics(credentials.topic, timeout=10)
        partitions = metadata.topics[credentials.topic].partitions
        consumer.assign(
            [TopicPartition(credentials.topic, p, OFFSET_BEGINNING) for p in partitions]
        )
        at_end: set[int] = set()
        total = 0
        deadline = time.monotonic() + WAIT_S
        while len(at_end) < len(partitions) and time.monotonic() < deadline:
            message = consumer.poll(POLL_S)
            if message is None:
                continue
            if message.error() is None:
                total += 1
            elif message.error().code() == KafkaError._PARTITION_EOF:
                at_end.add(message.partition())
        return total
    finally:
        consumer.close()


def auth_error(errors: list[KafkaError]) -> bool:
    return any(e.code() in (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED)
               for e in errors)  # fmt: skip


def poll_error(consumer: Consumer) -> int | None:
    """The first error code a poll returns (None if none within the wait)."""
    deadline = time.monotonic() + AUTH_WAIT_S
    try:
        while time.monotonic() < deadline:
            message = consumer.poll(POLL_S)
            if message is not None and message.error() is not None:
                return int(message.error().code())
        return None
    finally:
        consumer.close()


def test_the_broker_keeps_partners_to_their_own_prefix(onboarded: Onboarded) -> None:
    bootstrap = onboarded.settings.bootstrap
    acme, globex = onboarded.acme, onboarded.globex

    other_topic, _ = partner_consumer(acme, bootstrap)
    other_topic.subscribe([globex.topic])
    assert poll_error(other_topic) == KafkaError.TOPIC_AUTHORIZATION_FAILED

    other_group, _ = partner_consumer(acme, bootstrap, group=f"{globex.group_prefix}stolen")
    other_group.subscribe([acme.topic])
    assert poll_error(other_group) == KafkaError.GROUP_AUTHORIZATION_FAILED

    delivered: list[KafkaError | None] = []
    producer = Producer(
        {k: v for k, v in client_config.consumer_config(acme, bootstrap).items()
         if k.startswith(("bootstrap", "security", "sasl"))}
        | {"message.timeout.ms": 15_000}
    )  # fmt: skip
    commands = Topics.from_settings(onboarded.settings).commands
    producer.produce(
        commands, key=b"acc", value=b"forged", on_delivery=lambda e, _m: delivered.append(e)
    )
    producer.flush(30)
    assert delivered and delivered[0] is not None
    assert delivered[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_a_wrong_password_is_refused(onboarded: Onboarded) -> None:
    wrong = dataclasses.replace(onboarded.acme, kafka_password="not-the-password")
    consumer, errors = partner_consumer(wrong, onboarded.settings.bootstrap)
    consumer.subscribe([onboarded.acme.topic])
    wait_until(
        lambda: bool(consumer.poll(POLL_S) or True) and auth_error(errors), timeout_s=AUTH_WAIT_S
    )
    consumer.close()
    assert auth_error(errors), errors


def test_the_partners_oauth_client_carries_its_partner_id(
    onboarded: Onboarded, keycloak: KeycloakServer, api: str
) -> None:
    client = onboarded.acme.oauth_client
    assert client is not None
    token = _token(keycloak, client.client_id, client.secret)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["partner_id"] == onboarded.acme.partner_id
    answer = httpx.get(f"{api}/v1/accounts", headers=bearer(token), timeout=HTTP_TIMEOUT_S)
    assert answer.status_code == 200, answer.text


def test_rotate_secret_ends_the_old_ones(onboarded: Onboarded, keycloak: KeycloakServer) -> None:
    settings = onboarded.settings
    old = onboarding.add(
        settings, keycloak, partner_id=f"rot-{uuid.uuid4().hex[:6]}", name="Rotating",
        contact_email="ops@rot.example", webhook_url=None,
    )  # fmt: skip
    new = onboarding.rotate_secret(settings, keycloak, partner_id=old.partner_id)
    assert new.kafka_password != old.kafka_password
    before, errors_before = partner_consumer(old, settings.bootstrap)
    before.subscribe([old.topic])
    wait_until(
        lambda: bool(before.poll(POLL_S) or True) and auth_error(errors_before),
        timeout_s=AUTH_WAIT_S,
    )
    before.close()
    assert auth_error(errors_before), "the old password still works"
    after, errors_after = partner_consumer(new, settings.bootstrap)
    after.subscribe([new.topic])
    for _ in range(6):
        after.poll(POLL_S)
    after.close()
    assert not auth_error(errors_after), errors_after
    assert old.oauth_client is not None and new.oauth_client is not None
    refused = _token_answer(keycloak, old.oauth_client.client_id, old.oauth_client.secret)
    assert refused.status_code == 401
    _token(keycloak, new.oauth_client.client_id, new.oauth_client.secret)


def test_remove_withdraws_access_and_the_topic(
    onboarded: Onboarded, keycloak: KeycloakServer
) -> None:
    settings = onboarded.settings
    gone = onboarding.add(
        settings, keycloak, partner_id=f"gone-{uuid.uuid4().hex[:6]}", name="Gone",
        contact_email="ops@gone.example", webhook_url=None,
    )  # fmt: skip
    onboarding.remove(settings, keycloak, partner_id=gone.partner_id)
    consumer, errors = partner_consumer(gone, settings.bootstrap)
    consumer.subscribe([gone.topic])
    wait_until(
        lambda: bool(consumer.poll(POLL_S) or True) and auth_error(errors), timeout_s=AUTH_WAIT_S
    )
    consumer.close()
    assert auth_error(errors)
    admin_topics = (
        Consumer(settings.kafka.config() | {"group.id": "x"}).list_topics(timeout=10).topics
    )
    assert gone.topic not in admin_topics
    assert gone.oauth_client is not None
    refused = _token_answer(keycloak, gone.oauth_client.client_id, gone.oauth_client.secret)
    assert refused.status_code in (400, 401)
    with pytest.raises(onboarding.OnboardingError):
        onboarding.remove(settings, keycloak, partner_id=gone.partner_id)


def test_the_cli_onboards_and_lists(
    onboarded: Onboarded, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = onboarded.settings
    for name, value in {
        "PAYSTREAM_ENVIRONMENT": "test", "PAYSTREAM_DATA_DIR": str(settings.data_dir),
        "PAYSTREAM_KAFKA_BOOTSTRAP": settings.bootstrap, "PAYSTREAM_KAFKA_SECURITY": "scram",
        "PAYSTREAM_KAFKA_USERNAME": settings.kafka_username,
        "PAYSTREAM_KAFKA_PASSWORD": settings.kafka.password or "",
        "PAYSTREAM_TOPIC_PREFIX": settings.topic_prefix,
        "PAYSTREAM_POSTGRES_DSN": settings.postgres_dsn or "",
        "PAYSTREAM_OIDC_ISSUER": settings.oidc_issuer or "http://127.0.0.1:9/realms/none",
    }.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    partner_id = f"cli-{uuid.uuid4().hex[:6]}"
    add = ["partners", "add", partner_id, "--name", "Cli Co", "--email", "ops@cli.example"]
    code = cli.main([*add, "--webhook-url", "https://hooks.cli.example/paystream"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert partner_topic(settings, partner_id) in printed.out
    assert f'"sasl.username": "partner.{partner_id}"' in printed.out
    assert "kcat -b" in printed.out and "whsec_" in printed.out
    assert (
        cli.main(["partners", "add", partner_id, "--name", "Cli Co", "--email", "ops@cli.example"])
        == 1
    )
    assert "onboarded already" in capsys.readouterr().err
    assert cli.main(["partners", "add", "Bad_Id", "--name", "x", "--email", "ops@x.example"]) == 1
    assert cli.main(["partners", "list"]) == 0
    listed = capsys.readouterr().out
    assert partner_id in listed and "https://hooks.cli.example/paystream" in listed


def _token_answer(keycloak: KeycloakServer, client_id: str, secret: str) -> httpx.Response:
    return httpx.post(
        keycloak.token_url,
        data={"grant_type": "client_credentials"},
        auth=(client_id, secret),
        timeout=HTTP_TIMEOUT_S,
    )


def _token(keycloak: KeycloakServer, client_id: str, secret: str) -> str:
    response = _token_answer(keycloak, client_id, secret)
    response.raise_for_status()
    return str(response.json()["access_token"])
