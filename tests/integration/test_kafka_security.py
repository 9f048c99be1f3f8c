"""The session's broker in scram mode (as ``make demo`` runs it), on its SASL port: SCRAM
authentication, the platform principal a super user, and nothing for a principal without ACLs.

Wrong credentials never surface as a message error: librdkafka reports them through the
client's ``error_cb`` (and logs), so that is what these tests watch.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)

from paystream.services.kafka import metadata_ok
from paystream.settings import KafkaConnection, Settings
from paystream.topology.reader import read_to_end
from paystream.topology.topics import Topics, ensure_topics
from tests.integration.kafka_util import consume

pytestmark = pytest.mark.integration

PARTITIONS = 2
TIMEOUT_S = 30.0
AUTH_ERROR_WAIT_S = 15.0
POLL_S = 0.5
CREDENTIAL_ITERATIONS = 4096
RECORDS = 20


def _errors_of(kafka: KafkaConnection, *, wait_s: float) -> list[KafkaError]:
    """The errors a producer on ``kafka`` reports through ``error_cb`` within ``wait_s`` (it
    stops at the first); it connects to the bootstrap broker as it starts."""
    errors: list[KafkaError] = []
    producer = Producer(kafka.config() | {"error_cb": errors.append, "log_level": 0})
    deadline = time.monotonic() + wait_s
    while not errors and time.monotonic() < deadline:
        producer.poll(POLL_S)
    return errors


def test_a_wrong_password_is_refused_and_the_platforms_is_taken(
    kafka_scram: KafkaConnection,
) -> None:
    wrong = dataclasses.replace(kafka_scram, password=f"{kafka_scram.password}x")
    refused = _errors_of(wrong, wait_s=AUTH_ERROR_WAIT_S)
    assert refused, "a wrong password went unreported"
    assert refused[0].code() == KafkaError._AUTHENTICATION, refused[0]
    assert "SASL authentication error" in refused[0].str(), refused[0]
    assert not metadata_ok(wrong)
    assert _errors_of(kafka_scram, wait_s=2.0) == []
    assert metadata_ok(kafka_scram)


def test_a_client_without_credentials_is_not_served_on_the_sasl_port(
    kafka_scram: KafkaConnection,
) -> None:
    assert not metadata_ok(KafkaConnection.plaintext(kafka_scram.bootstrap))


def _topics(unique_topic: str) -> Topics:
    return Topics.from_settings(Settings(topic_prefix=unique_topic, partitions=PARTITIONS))


def test_the_platform_principal_creates_produces_and_consumes_transactionally(
    kafka_scram: KafkaConnection, unique_topic: str
) -> None:
    """Topics made, a consume-transform-produce transaction with the input offsets (the
    workers' commit), and a read_committed read: all as the platform, over SCRAM."""
    topics = _topics(unique_topic)
    assert sorted(ensure_topics(kafka_scram, topics)) == sorted(topics.configs())
    source = Producer(kafka_scram.config() | {"enable.idempotence": True, "acks": "all"})
    for n in range(RECORDS):
        source.produce(topics.commands, key=f"a{n}", value=f"c{n}")
    assert source.flush(TIMEOUT_S) == 0

    group = f"{unique_topic}-worker"
    consumer = Consumer(
        kafka_scram.config()
        | {
            "group.id": group,
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
        }
    )
    producer = Producer(kafka_scram.config() | {"transactional.id": f"{group}-1", "acks": "all"})
    try:
        consumer.subscribe([topics.commands])
        taken = consume(consumer, count=RECORDS, timeout_s=TIMEOUT_S)
        assert len(taken) == RECORDS
        producer.init_transactions(TIMEOUT_S)
        producer.begin_transaction()
        for message in taken:
            producer.produce(topics.events, key=message.key(), value=message.value())
        positions = consumer.position(consumer.assignment())
        producer.send_offsets_to_transaction(
            positions, consumer.consumer_group_metadata(), TIMEOUT_S
        )
        producer.commit_transaction(TIMEOUT_S)
        committed = consumer.committed(consumer.assignment(), timeout=TIMEOUT_S)
    finally:
        consumer.close()
    assert sum(tp.offset for tp in committed) == RECORDS
    events = sorted(m.value() for m in read_to_end(kafka_scram, topics.events))
    assert events == sorted(f"c{n}".encode() for n in range(RECORDS))


@pytest.fixture
def stranger(kafka_scram: KafkaConnection) -> Iterator[KafkaConnection]:
    """A principal with a valid SCRAM credential and no ACL at all (removed afterwards)."""
    name = f"stranger-{uuid.uuid4().hex[:8]}"
    password = secrets.token_urlsafe(24)
    admin = AdminClient(kafka_scram.config())
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, CREDENTIAL_ITERATIONS)
    upsert = UserScramCredentialUpsertion(name, info, password.encode())
    for future in admin.alter_user_scram_credentials([upsert]).values():
        future.result(timeout=TIMEOUT_S)
    connection = KafkaConnection(
        bootstrap=kafka_scram.bootstrap, security="scram", username=name, password=password
    )
    deadline = time.monotonic() + TIMEOUT_S  # the broker applies the credential from metadata
    while not metadata_ok(connection):
        assert time.monotonic() < deadline, f"{name} never authenticated"
    yield connection
    deletion = UserScramCredentialDeletion(name, ScramMechanism.SCRAM_SHA_256)
    for future in admin.alter_user_scram_credentials([deletion]).values():
        future.result(timeout=TIMEOUT_S)


def test_a_principal_without_acls_can_neither_write_nor_read_commands(
    kafka_scram: KafkaConnection, stranger: KafkaConnection, unique_topic: str
) -> None:
    topics = _topics(unique_topic)
    ensure_topics(kafka_scram, topics)
    platform = Producer(kafka_scram.config() | {"acks": "all"})
    platform.produce(topics.commands, key=b"a", value=b"the platform's", partition=0)
    assert platform.flush(TIMEOUT_S) == 0

    delivered: list[KafkaError | None] = []
    writer = Producer(stranger.config() | {"acks": "all", "message.timeout.ms": 10_000})
    writer.produce(
        topics.commands, key=b"a", value=b"forged", partition=0,
        on_delivery=lambda error, _message: delivered.append(error),
    )  # fmt: skip
    writer.flush(TIMEOUT_S)
    assert len(delivered) == 1 and delivered[0] is not None, delivered
    assert delivered[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, delivered[0]

    with pytest.raises(KafkaException) as unread:
        list(read_to_end(stranger, topics.commands))  # paystream's own reader, as the stranger
    assert unread.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, unread.value
    member = Consumer(stranger.config() | {"group.id": f"{unique_topic}-stranger"})
    try:
        member.subscribe([topics.commands])
        refused = _first_error(member)
    finally:
        member.close()
    assert refused.code() == KafkaError.GROUP_AUTHORIZATION_FAILED, refused
    committed = list(read_to_end(kafka_scram, topics.commands))
    assert [m.value() for m in committed] == [b"the platform's"], "a forged command landed"


def _first_error(consumer: Consumer) -> KafkaError:
    """The first error the consumer reports; fails on a record read or on no error."""
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        message: Message | None = consumer.poll(POLL_S)
        if message is None:
            continue
        error: KafkaError | None = message.error()
        assert error is not None, f"the stranger read {message.value()!r}"
        return error
    raise AssertionError("the consumer reported nothing")
