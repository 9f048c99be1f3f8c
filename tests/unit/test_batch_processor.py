"""BatchProcessor: messages in, records and table writes out; bad input never raises.

Real serde, real core and real ``Stores`` (RocksDB); Kafka is a :class:`FakeLog`
(the stores' restore consumer) and :class:`FakeMessage` inputs. A batch's
writes are applied and its changelog records appended to the log, as a
committed transaction would.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_writer

from paystream.agents import processor as processor_module
from paystream.agents import stores as stores_module
from paystream.agents.directory import FixedDirectory
from paystream.agents.processor import (
    BALANCES,
    IDEMPOTENCY,
    INDEXES,
    Batch,
    BatchProcessor,
    Record,
    changelogs,
)
from paystream.agents.stores import Stores, TableWrite
from paystream.ledger import (
    CORE_VERSION,
    CreditLeg,
    Deposit,
    Event,
    IdempotencyKey,
    IdempotencyRecord,
    InvariantViolation,
    OpenAccount,
    Rules,
    Transfer,
)
from paystream.settings import KafkaConnection, Settings
from paystream.tables import codecs
from paystream.topology import records
from paystream.topology.avro import SCHEMA_DIR, AvroSerde
from paystream.topology.dlq import DLQ_KEY_BYTES_MAX, DLQ_VALUE_BYTES_MAX
from paystream.topology.manifest import (
    BatchManifest,
    InputRun,
    OutputHasher,
    decode_manifest,
    encode_manifest,
    runs_of,
)
from paystream.topology.partitioner import partition_for
from paystream.topology.registry import FileSchemaRegistry
from paystream.topology.topics import Topics
from tests.support.ledger import PARTNER, T0_MS, cid, confirmation_of, leg_of
from tests.unit.kafka_fakes import FakeLog, FakeMessage

PARTITIONS = 8
RETENTION_MS = 3_600_000
RULES = Rules(retention_ms=RETENTION_MS)


def account_on(partition: int, *, not_: str = "") -> str:
    """An account id whose murmur2 partition is ``partition``."""
    return next(
        f"acct-{n}"
        for n in range(10_000)
        if f"acct-{n}" != not_ and partition_for(f"acct-{n}".encode(), PARTITIONS) == partition
    )


P = 3
ACCOUNT = account_on(P)
OTHER_ON_P = account_on(P, not_=ACCOUNT)
ON_ANOTHER = account_on(P + 1)


def open_account(n: int, account_id: str = ACCOUNT, **changes: Any) -> OpenAccount:
    command = OpenAccount(
        cid(n, partition=P), f"req-{n}", PARTNER, T0_MS, account_id, currency="EUR"
    )
    return replace(command, **changes)


class Harness:
    """One processor over real stores holding partition ``P``; offsets count up."""

    def __init__(self, tmp_path: Path, log: FakeLog) -> None:
        self.topics = Topics.from_settings(
            Settings(topic_prefix="p", partitions=PARTITIONS, kafka_bootstrap="127.0.0.1:9")
        )
        self.registry = FileSchemaRegistry(tmp_path / "registry.json")
        self.serde = AvroSerde(self.registry, topics=self.topics.payloads())
        self.log = log
        self.stores = self.new_stores(tmp_path / "stores")
        self.processor = BatchProcessor(
            topics=self.topics,
            serde=self.serde,
            stores=self.stores,
            directory=FixedDirectory(),
            rules=RULES,
            worker="test",
        )
        self.offset = 0

    def new_stores(self, directory: Path) -> Stores:
        """Stores holding ``P``, restored from the changelogs in the log."""
        stores = Stores(
            directory=directory,
            kafka=KafkaConnection.plaintext("127.0.0.1:9"),
            changelogs=changelogs(self.topics),
            indexes=INDEXES,
            client_id="test",
            topic_ids=lambda names: {name: "fake-id" for name in names},
        )
        stores.hold({P})
        return stores

    def message(
        self,
        value: bytes | None,
        *,
        key: bytes | None,
        topic: str | None = None,
        partition: int = P,
        at_ms: int = T0_MS,
    ) -> FakeMessage:
        self.offset += 1
        topic = self.topics.commands if topic is None else topic
        return FakeMessage(topic, partition, self.offset, key, value, timestamp_ms=at_ms)

    def command(self, command: Any, *, key: bytes | None = None, **options: Any) -> FakeMessage:
        key = command.account_id.encode() if key is None else key
        return self.message(self.serde.encode_command(command), key=key, **options)

    def commit(self, messages: Sequence[FakeMessage]) -> Batch:
        """Process, then do what a committed transaction does: changelogs, then stores."""
        batch = self.processor.process(messages)  # type: ignore[arg-type]
        changelogs = set(self.processor.changelogs.values())
        for record in batch.records:
            if record.topic in changelogs:
                assert record.partition is not None
                self.log.append(record.topic, record.partition, record.key, record.value)
        self.stores.apply(batch.writes)
        return batch

    def on(self, batch: Batch, topic: str) -> list[Record]:
        return [record for record in batch.records if record.topic == topic]

    def events(self, batch: Batch) -> list[Event]:
        return [
            self.serde.decode_event(r.value) for r in self.on(batch, self.topics.events) if r.value
        ]

    def idempotency(self, key: bytes) -> bytes | None:
        return self.stores.get(IDEMPOTENCY, P)(key)


@pytest.fixture
def log(monkeypatch: pytest.MonkeyPatch) -> FakeLog:
    log = FakeLog()
    monkeypatch.setattr(stores_module, "Consumer", log.consumer)
    return log


@pytest.fixture
def harness(tmp_path: Path, log: FakeLog) -> Iterator[Harness]:
    harness = Harness(tmp_path, log)
    yield harness
    harness.stores.close()


def dlq_headers(record: Record) -> dict[str, bytes]:
    return dict(record.headers or [])


# --- the happy path, so the refusals below mean something ----------------------------------


def test_a_placed_command_is_applied(harness: Harness) -> None:
    command = open_account(1)
    batch = harness.commit([harness.command(command)])
    assert [(e.type, e.code, e.event_id) for e in harness.events(batch)] == [
        ("Completed", None, f"{command.command_id}:completed")
    ]
    assert harness.on(batch, harness.topics.dlq) == []
    assert batch.dead_letters == []
    assert sorted(type(o).__name__ for o in batch.outputs) == ["DirectoryEntry", "Event"]
    assert harness.stores.get("balances", P)(codecs.encode_account_key(ACCOUNT)) is not None


# --- wrong partition -----------------------------------------------------------------------


def _refused_as_misplaced(harness: Harness, message: FakeMessage, command: Any) -> None:
    batch = harness.commit([message])
    [dead] = harness.on(batch, harness.topics.dlq)
    headers = dlq_headers(dead)
    assert headers["dlq.reason"] == b"wrong_partition"
    assert (headers["dlq.partition"], headers["dlq.offset"]) == (
        str(message.partition()).encode(),
        str(message.offset()).encode(),
    )
    assert (dead.key, dead.value) == (message.key(), message.value())
    assert batch.dead_letters == ["wrong_partition"]
    [event] = harness.events(batch)
    assert (event.type, event.code, event.payment_id) == (
        "Rejected",
        "wrong_partition",
        command.command_id,
    )
    # An answer that holds no claim: unique by its log position, never the payment's own id.
    assert event.event_id == f"{command.command_id}:rejected:{P}.{message.offset()}"
    [answer] = harness.on(batch, harness.topics.events)
    assert answer.key == command.command_id.encode()
    assert harness.on(batch, harness.topics.balances_changelog) == []
    assert harness.on(batch, harness.topics.directory) == []
    claim = codecs.encode_idempotency_key(("command", "", command.command_id))
    assert harness.idempotency(claim) is None  # the id belongs to another partition's record


def test_a_key_that_is_not_the_commands_account_is_refused(harness: Harness) -> None:
    command = open_account(1)
    key = OTHER_ON_P.encode()  # on this very partition, but another account's key
    assert partition_for(key, PARTITIONS) == P
    _refused_as_misplaced(harness, harness.command(command, key=key), command)


def test_a_command_on_another_partition_than_murmur2_of_its_key_is_refused(
    harness: Harness,
) -> None:
    """A producer with another partitioner (librdkafka's default CRC32) put it here."""
    command = open_account(1, ON_ANOTHER)
    message = harness.command(command)
    assert message.key() == ON_ANOTHER.encode()
    assert partition_for(ON_ANOTHER.encode(), PARTITIONS) != message.partition()
    _refused_as_misplaced(harness, message, command)


def test_a_command_without_a_key_is_refused(harness: Harness) -> None:
    command = open_account(1)
    message = harness.message(harness.serde.encode_command(command), key=None)
    batch = harness.commit([message])
    [dead] = harness.on(batch, harness.topics.dlq)
    assert (dead.key, dlq_headers(dead)["dlq.reason"]) == (b"", b"wrong_partition")
    assert [(e.type, e.code) for e in harness.events(batch)] == [("Rejected", "wrong_partition")]


def test_a_misplaced_copy_does_not_stop_the_placed_original(harness: Harness) -> None:
    """Issue 12, finding 6: two OpenAccounts of one account, one under another key."""
    command = open_account(1)
    copy = replace(command, command_id=cid(2, partition=P), request_id="req-2")
    batch = harness.commit(
        [harness.command(copy, key=OTHER_ON_P.encode()), harness.command(command)]
    )
    assert [(e.payment_id, e.type, e.code) for e in harness.events(batch)] == [
        (copy.command_id, "Rejected", "wrong_partition"),
        (command.command_id, "Completed", None),
    ]


@pytest.mark.parametrize(
    ("value", "reason"),
    [(b"\x00garbage", "unknown_schema_id"), (b"?", "undecodable"), (None, "undecodable")],
)
def test_an_undecodable_value_under_a_misplaced_key_keeps_its_decoding_reason(
    harness: Harness, value: bytes | None, reason: str
) -> None:
    """No ids could be read, so nothing says the record is misplaced: why it did not decode."""
    message = harness.message(value, key=ON_ANOTHER.encode())
    assert partition_for(ON_ANOTHER.encode(), PARTITIONS) != message.partition()
    batch = harness.commit([message])
    [dead] = harness.on(batch, harness.topics.dlq)
    assert (dead.key, dlq_headers(dead)["dlq.reason"]) == (ON_ANOTHER.encode(), reason.encode())
    assert batch.dead_letters == [reason]
    assert harness.events(batch) == []  # no ids to answer
    assert batch.writes == []


def test_an_invalid_command_under_a_misplaced_key_is_refused_as_misplaced(
    harness: Harness,
) -> None:
    """Its ids can be read: misplaced wins over the field, and the answer says so."""
    command = open_account(1, ON_ANOTHER, currency="eur")
    message = harness.command(command)
    assert partition_for(message.key(), PARTITIONS) != message.partition()
    _refused_as_misplaced(harness, message, command)


def test_an_invalid_command_under_another_accounts_key_on_this_partition_is_misplaced(
    harness: Harness,
) -> None:
    """Finding 6: the key must be the command's account, wherever murmur2 puts it."""
    command = open_account(1, currency="eur")  # invalid_field, ids readable
    message = harness.command(command, key=OTHER_ON_P.encode())
    assert partition_for(message.key(), PARTITIONS) == message.partition()
    _refused_as_misplaced(harness, message, command)


def test_an_invalid_command_with_unreadable_ids_under_a_misplaced_key_keeps_its_reason(
    harness: Harness,
) -> None:
    command = open_account(1, ON_ANOTHER, partner_id="")  # invalid, and no partner to answer
    message = harness.command(command)
    assert partition_for(message.key(), PARTITIONS) != message.partition()
    batch = harness.commit([message])
    assert batch.dead_letters == ["invalid_field"]
    assert harness.events(batch) == []
    assert batch.writes == []


# --- dead letters that are answered ----------------------------------------------------------


def test_an_invalid_field_command_is_dead_lettered_and_rejected(harness: Harness) -> None:
    command = open_account(1, currency="eur")
    message = harness.command(command)
    batch = harness.commit([message])
    [dead] = harness.on(batch, harness.topics.dlq)
    assert dlq_headers(dead)["dlq.reason"] == b"invalid_field"
    assert dlq_headers(dead)["dlq.detail"].startswith(b"currency: ")
    assert (dead.key, dead.value) == (message.key(), message.value())
    assert batch.dead_letters == ["invalid_field"]
    [event] = harness.events(batch)
    assert (event.type, event.code, event.event_id) == (
        "Rejected",
        "invalid_field",
        f"{command.command_id}:rejected",  # a free, valid id is claimed by its answer
    )
    assert (event.command_type, event.partner_id, event.account_id) == (
        "OpenAccount",
        PARTNER,
        ACCOUNT,
    )
    claim = harness.idempotency(codecs.encode_idempotency_key(("command", "", command.command_id)))
    assert claim is not None
    assert codecs.decode_idempotency_record(claim).code == "invalid_field"
    request = codecs.encode_idempotency_key(("request", PARTNER, command.request_id))
    assert harness.idempotency(request) is None  # Stripe: no result saved for a bad request
    assert harness.on(batch, harness.topics.balances_changelog) == []


def test_the_claim_of_a_rejected_id_refuses_its_reuse(harness: Harness) -> None:
    bad = open_account(1, currency="eur")
    harness.commit([harness.command(bad)])
    fixed = replace(bad, currency="EUR", request_id="req-again")
    [event] = harness.events(harness.commit([harness.command(fixed)]))
    assert (event.type, event.code) == ("Rejected", "command_id_reused")


def test_an_unknown_command_type_is_dead_lettered_and_rejected(harness: Harness) -> None:
    schema = json.loads((SCHEMA_DIR / "command.avsc").read_text())
    body = next(f for f in schema["fields"] if f["name"] == "body")
    body["type"].append({"type": "record", "name": "Payout", "fields": []})
    schema_id = harness.registry.register(harness.serde.subject("command"), json.dumps(schema))
    command = open_account(1)
    record = {**records.command_to_record(command), "body": ("paystream.v1.Payout", {})}
    out = io.BytesIO()
    out.write(struct.pack(">bI", 0, schema_id))
    schemaless_writer(out, parse_schema(schema), record)
    batch = harness.commit([harness.message(out.getvalue(), key=ACCOUNT.encode())])
    assert batch.dead_letters == ["unknown_command"]
    [event] = harness.events(batch)
    assert (event.type, event.code, event.command_type) == ("Rejected", "unknown_command", "Payout")


def test_unreadable_ids_get_no_answer(harness: Harness) -> None:
    command = open_account(1, partner_id="")  # invalid, and no partner to answer
    batch = harness.commit([harness.command(command)])
    assert batch.dead_letters == ["invalid_field"]
    assert harness.events(batch) == []
    assert batch.writes == []


# --- bounded dead letters --------------------------------------------------------------------


def test_an_oversized_garbage_value_becomes_a_bounded_dlq_record(harness: Harness) -> None:
    """Issue 12, finding 7: 999,900 random bytes, and a valid command behind them."""
    garbage = hashlib.shake_256(b"garbage").digest(999_900)
    message = harness.message(garbage, key=ACCOUNT.encode())
    command = open_account(1)
    batch = harness.commit([message, harness.command(command)])
    [dead] = harness.on(batch, harness.topics.dlq)
    assert dead.value == garbage[:DLQ_VALUE_BYTES_MAX]
    headers = dlq_headers(dead)
    assert headers["dlq.reason"] == b"undecodable"
    assert headers["dlq.offset"] == str(message.offset()).encode()
    assert headers["dlq.size"] == b"999900"
    assert headers["dlq.sha256"] == hashlib.sha256(garbage).hexdigest().encode()
    assert batch.dead_letters == ["undecodable"]
    assert [(e.payment_id, e.type) for e in harness.events(batch)] == [
        (command.command_id, "Completed")
    ]


def test_a_small_dead_letter_keeps_its_value_and_no_size_headers(harness: Harness) -> None:
    batch = harness.commit([harness.message(b"\x00\x00", key=ACCOUNT.encode())])
    [dead] = harness.on(batch, harness.topics.dlq)
    assert dead.value == b"\x00\x00"
    assert {"dlq.size", "dlq.sha256", "dlq.key_size", "dlq.key_sha256"} & set(
        dlq_headers(dead)
    ) == set()


def test_an_empty_command_value_is_dead_lettered(harness: Harness) -> None:
    batch = harness.commit([harness.message(None, key=ACCOUNT.encode())])
    [dead] = harness.on(batch, harness.topics.dlq)
    assert (dead.value, dlq_headers(dead)["dlq.reason"]) == (b"", b"undecodable")


# --- legs are internal --------------------------------------------------------------------------


@pytest.mark.parametrize("value", [b"\x00garbage", None])
def test_an_undecodable_leg_is_an_invariant_violation(
    harness: Harness, value: bytes | None
) -> None:
    message = harness.message(value, key=ACCOUNT.encode(), topic=harness.topics.legs)
    with pytest.raises(InvariantViolation, match=rf"undecodable leg at p\.legs\[{P}\]@"):
        harness.processor.process([message])  # type: ignore[list-item]


def test_an_invalid_leg_is_an_invariant_violation(harness: Harness) -> None:
    leg = CreditLeg(
        transfer_id=cid(1, partition=P),
        request_id="req-1",
        partner_id=PARTNER,
        issued_at_ms=T0_MS,
        source_account_id=ON_ANOTHER,
        destination_account_id=ACCOUNT,
        amount_minor=5,
        currency="HRK",  # dropped from the pinned ISO list since: still never a DLQ record
    )
    value = harness.serde.encode_leg(leg)
    message = harness.message(value, key=ACCOUNT.encode(), topic=harness.topics.legs)
    with pytest.raises(InvariantViolation, match="invalid_field"):
        harness.processor.process([message])  # type: ignore[list-item]


# --- the clock, the expiry index, expiry -------------------------------------------------------


def _rows(batch: Batch, topic: str) -> list[tuple[bytes, bytes | None]]:
    return [(r.key, r.value) for r in batch.records if r.topic == topic]


def _store_deletes(batch: Batch) -> set[bytes]:
    return {w.key for w in batch.writes if w.value is None}


def test_the_clock_and_the_expiry_index_are_written(harness: Harness) -> None:
    command = open_account(1)
    batch = harness.commit([harness.command(command, at_ms=T0_MS + 5)])
    rows = dict(_rows(batch, harness.topics.idempotency_changelog))
    assert rows[codecs.CLOCK_KEY] == codecs.encode_clock(T0_MS + 5)
    request = codecs.encode_idempotency_key(("request", PARTNER, command.request_id))
    claim = codecs.encode_idempotency_key(("command", "", command.command_id))
    request_record = codecs.decode_idempotency_record(rows[request])  # type: ignore[arg-type]
    claim_record = codecs.decode_idempotency_record(rows[claim])  # type: ignore[arg-type]
    assert request_record.expires_at_ms == T0_MS + 5 + RETENTION_MS
    assert claim_record.expires_at_ms == T0_MS + RETENTION_MS  # the id's own window
    assert len(rows) == 3  # the clock and two records: the expiry index is the store's own
    writes = [(w.key, w.value) for w in batch.writes if w.table == IDEMPOTENCY]
    assert writes == _rows(batch, harness.topics.idempotency_changelog)
    index = codecs.encode_expiry_index_key
    assert harness.idempotency(index(T0_MS + 5 + RETENTION_MS, request)) == b""
    assert harness.idempotency(index(T0_MS + RETENTION_MS, claim)) == b""
    assert harness.processor._clock_ms(P) == T0_MS + 5


def test_the_clock_never_goes_back_and_is_written_only_when_it_moves(harness: Harness) -> None:
    harness.commit([harness.command(open_account(1), at_ms=T0_MS + 10)])
    later = harness.commit([harness.command(open_account(2, OTHER_ON_P), at_ms=T0_MS + 5)])
    assert codecs.CLOCK_KEY not in dict(_rows(later, harness.topics.idempotency_changelog))
    assert harness.processor._clock_ms(P) == T0_MS + 10


def test_a_message_without_a_timestamp_has_log_time_zero(harness: Harness) -> None:
    command = open_account(1)
    [event] = harness.events(harness.commit([harness.command(command, at_ms=-1)]))
    # Log time 0 is far outside the id's window: refused, and never a crash.
    assert (event.type, event.code) == ("Rejected", "command_id_invalid")


def _seed(harness: Harness, rows: dict[bytes, bytes]) -> None:
    writes = [TableWrite(IDEMPOTENCY, P, key, value) for key, value in rows.items()]
    harness.stores.apply(writes)
    for write in writes:
        harness.log.append(harness.topics.idempotency_changelog, P, write.key, write.value)


def _record(expires_at_ms: int) -> bytes:
    return codecs.encode_idempotency_record(
        IdempotencyRecord(
            command_id="c", body_sha256="0" * 64, code=None, expires_at_ms=expires_at_ms
        )
    )


def _key(name: str) -> bytes:
    key: IdempotencyKey = ("request", PARTNER, name)
    return codecs.encode_idempotency_key(key)


E1 = T0_MS - 10
E2 = T0_MS + 10


def test_expired_rows_are_deleted_only_when_their_records_expiry_matches(
    harness: Harness,
) -> None:
    due, rewritten, gone, future = _key("due"), _key("rewritten"), _key("gone"), _key("future")
    index = codecs.encode_expiry_index_key
    _seed(
        harness,
        {
            due: _record(E1),
            index(E1, due): b"",
            rewritten: _record(E2),  # rewritten later: its old index row is stale
            index(E1, rewritten): b"",
            index(E2, rewritten): b"",
            index(E1, gone): b"",  # its row is gone already
            future: _record(E2),
            index(E2, future): b"",
        },
    )
    batch = harness.commit([harness.command(open_account(1), at_ms=T0_MS)])
    tombstones = {
        key for key, value in _rows(batch, harness.topics.idempotency_changelog) if value is None
    }
    assert tombstones == {due}  # index rows are the store's own: deleted there only
    deleted = _store_deletes(batch)
    assert deleted == {due, index(E1, due), index(E1, rewritten), index(E1, gone)}
    for key in deleted:
        assert harness.idempotency(key) is None
    for key in (rewritten, index(E2, rewritten), future, index(E2, future)):
        assert harness.idempotency(key) is not None


def test_a_row_expiring_exactly_now_is_deleted(harness: Harness) -> None:
    """The core treats a record as absent from ``clock >= expires_at_ms``: so does storage."""
    edge, after = _key("edge"), _key("after")
    index = codecs.encode_expiry_index_key
    _seed(
        harness,
        {
            edge: _record(T0_MS),
            index(T0_MS, edge): b"",
            after: _record(T0_MS + 1),
            index(T0_MS + 1, after): b"",
        },
    )
    batch = harness.commit([harness.command(open_account(1), at_ms=T0_MS)])
    tombstones = {k for k, v in _rows(batch, harness.topics.idempotency_changelog) if v is None}
    assert tombstones == {edge}
    assert _store_deletes(batch) == {edge, index(T0_MS, edge)}


def test_a_request_id_used_again_after_expiry_keeps_its_new_record(harness: Harness) -> None:
    first = open_account(1)
    harness.commit([harness.command(first, at_ms=T0_MS)])
    request = codecs.encode_idempotency_key(("request", PARTNER, first.request_id))
    claim = codecs.encode_idempotency_key(("command", "", first.command_id))
    later_ms = T0_MS + RETENTION_MS
    again = Deposit(
        cid(2, partition=P, at_ms=later_ms),
        first.request_id,  # forgotten by now: a new request
        PARTNER,
        later_ms,
        ACCOUNT,
        amount_minor=5,
        currency="EUR",
    )
    batch = harness.commit([harness.command(again, at_ms=later_ms)])
    [event] = harness.events(batch)
    assert (event.type, event.code) == ("Completed", None)
    tombstones = {k for k, v in _rows(batch, harness.topics.idempotency_changelog) if v is None}
    index = codecs.encode_expiry_index_key
    assert tombstones == {claim}
    deleted = _store_deletes(batch)
    assert deleted == {claim, index(T0_MS + RETENTION_MS, claim), index(later_ms, request)}
    raw = harness.idempotency(request)
    assert raw is not None
    assert codecs.decode_idempotency_record(raw).expires_at_ms == later_ms + RETENTION_MS
    assert codecs.decode_idempotency_record(raw).command_id == again.command_id


def test_expiry_is_bounded_per_batch(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(processor_module, "EXPIRED_PER_BATCH_MAX", 2)
    keys = [_key(f"k{n}") for n in range(5)]
    index = codecs.encode_expiry_index_key
    _seed(harness, {k: v for n, key in enumerate(keys) for k, v in _pair(E1 + n, key)})
    batch = harness.commit([harness.command(open_account(1), at_ms=T0_MS)])
    deleted = [w.key for w in batch.writes if w.value is None]
    assert deleted == [index(E1, keys[0]), keys[0], index(E1 + 1, keys[1]), keys[1]]  # oldest first
    batch = harness.commit([harness.command(open_account(2, OTHER_ON_P), at_ms=T0_MS)])
    deleted = [w.key for w in batch.writes if w.value is None]
    assert deleted == [index(E1 + 2, keys[2]), keys[2], index(E1 + 3, keys[3]), keys[3]]
    tombstones = [k for k, v in _rows(batch, harness.topics.idempotency_changelog) if v is None]
    assert tombstones == [keys[2], keys[3]]


def _pair(expires_at_ms: int, key: bytes) -> list[tuple[bytes, bytes]]:
    return [
        (key, _record(expires_at_ms)),
        (codecs.encode_expiry_index_key(expires_at_ms, key), b""),
    ]


def test_a_restore_from_the_changelog_applies_the_tombstones(
    harness: Harness, tmp_path: Path
) -> None:
    """A changelog written before the index was derived holds index rows too (``_seed``):
    a restore applies them; one whose record expired since is stale in the restored store,
    never a live row's, and the next expiry deletes it (storage only)."""
    due = _key("due")
    _seed(harness, dict(_pair(E1, due)))
    harness.commit([harness.command(open_account(1), at_ms=T0_MS)])
    restored = harness.new_stores(tmp_path / "restored")
    try:
        for table in (BALANCES, IDEMPOTENCY):
            here, there = harness.stores.get(table, P), restored.get(table, P)
            keys = [
                r[0]
                for (topic, _p), rows in harness.log.partitions.items()
                for r in rows
                if topic == harness.processor.changelogs[table]
                and not r[0].startswith(codecs.EXPIRY_INDEX_PREFIX)
            ]
            assert keys
            assert [here(k) for k in keys] == [there(k) for k in keys]
        there = restored.get(IDEMPOTENCY, P)
        assert there(due) is None
        clock_ms = T0_MS + RETENTION_MS
        live = list(harness.stores.expired(IDEMPOTENCY, P, clock_ms, limit=100))
        found = list(restored.expired(IDEMPOTENCY, P, clock_ms, limit=100))
        assert set(live) <= set(found)
        assert [key for _row, _at, key in set(found) - set(live)] == [due]
    finally:
        restored.close()


def test_a_restore_derives_the_expiry_index_from_the_records(
    harness: Harness, tmp_path: Path
) -> None:
    """The changelog carries records only; a restored store indexes them as the live one did."""
    harness.commit([harness.command(open_account(1), at_ms=T0_MS)])
    later_ms = T0_MS + 2 * RETENTION_MS
    live = list(harness.stores.expired(IDEMPOTENCY, P, later_ms, limit=100))
    assert len(live) == 2  # the request id's record and the command id's claim
    restored = harness.new_stores(tmp_path / "restored")
    try:
        assert list(restored.expired(IDEMPOTENCY, P, later_ms, limit=100)) == live
    finally:
        restored.close()


def test_outputs_are_kept_and_routed(harness: Harness) -> None:
    deposit = Deposit(cid(2, partition=P), "req-2", PARTNER, T0_MS, ACCOUNT, 10, "EUR")
    transfer = Transfer(cid(3, partition=P), "req-3", PARTNER, T0_MS, ACCOUNT, ON_ANOTHER, 5, "EUR")
    batch = harness.commit([harness.command(c) for c in (open_account(1), deposit, transfer)])
    assert batch.dead_letters == []
    internal = {*harness.processor.changelogs.values(), harness.topics.batches}
    routed = [r for r in batch.records if r.topic not in internal]
    assert len(routed) == len(batch.outputs)
    topics = harness.topics
    by_type = {
        "JournalEntry": topics.ledger,
        "Event": topics.events,
        "CreditLeg": topics.legs,
        "DirectoryEntry": topics.directory,
    }
    assert [r.topic for r in routed] == [by_type[type(o).__name__] for o in batch.outputs]
    [leg] = harness.on(batch, topics.legs)
    assert leg.key == ON_ANOTHER.encode()  # the destination's partition decides
    assert [(e.payment_id, e.type) for e in harness.events(batch)] == [
        (open_account(1).command_id, "Completed"),
        (deposit.command_id, "Completed"),
        (transfer.command_id, "Debited"),
    ]


def test_an_oversized_key_becomes_a_bounded_dlq_record(harness: Harness) -> None:
    key = hashlib.shake_256(b"key").digest(900_000)
    value = hashlib.shake_256(b"value").digest(100_000)  # together: within message.max.bytes
    message = harness.message(value, key=key)
    command = open_account(1)
    batch = harness.commit([message, harness.command(command)])
    [dead] = harness.on(batch, harness.topics.dlq)
    assert (dead.key, dead.value) == (key[:DLQ_KEY_BYTES_MAX], value[:DLQ_VALUE_BYTES_MAX])
    headers = dlq_headers(dead)
    assert headers["dlq.reason"] == b"undecodable"
    assert headers["dlq.offset"] == str(message.offset()).encode()
    assert (headers["dlq.key_size"], headers["dlq.key_sha256"]) == (
        b"900000",
        hashlib.sha256(key).hexdigest().encode(),
    )
    assert (headers["dlq.size"], headers["dlq.sha256"]) == (
        b"100000",
        hashlib.sha256(value).hexdigest().encode(),
    )
    size = len(dead.key) + len(dead.value or b"")
    size += sum(len(name) + len(raw) for name, raw in dead.headers or [])
    assert size <= DLQ_KEY_BYTES_MAX + DLQ_VALUE_BYTES_MAX + 4096  # the copy's own headers
    assert batch.dead_letters == ["undecodable"]
    assert [(e.payment_id, e.type) for e in harness.events(batch)] == [
        (command.command_id, "Completed")
    ]


# --- batch manifests ------------------------------------------------------------------------


def test_each_partition_of_a_batch_gets_a_manifest_of_its_inputs_and_outputs(
    harness: Harness,
) -> None:
    """Inputs in the order the core took them (commands and legs interleaved, a dead letter
    among them), the rules, the clock before the batch, and the digest of what was sent."""
    deposit = Deposit(cid(2, partition=P), "req-2", PARTNER, T0_MS, ACCOUNT, 100, "EUR")
    transfer = Transfer(cid(3, partition=P), "req-3", PARTNER, T0_MS, ACCOUNT, ON_ANOTHER, 5, "EUR")
    first = harness.commit([harness.command(c) for c in (open_account(1), deposit, transfer)])
    confirmation = confirmation_of(leg_of(transfer))
    messages = [
        harness.command(open_account(4, OTHER_ON_P), at_ms=T0_MS + 1_000),
        harness.message(harness.serde.encode_leg(confirmation), key=ACCOUNT.encode(),
                        topic=harness.topics.legs, at_ms=T0_MS + 1_000),
        harness.message(b"garbage", key=ACCOUNT.encode(), at_ms=T0_MS + 1_000),
    ]  # fmt: skip
    batch = harness.commit(messages)
    [record] = harness.on(batch, harness.topics.batches)
    assert (record.key, record.partition) == (str(P).encode(), P)
    assert record.value is not None
    manifest = decode_manifest(harness.serde, record.value)
    offsets = [m.offset() for m in messages]
    assert manifest.runs == (
        InputRun("commands", offsets[0], offsets[0], 1),
        InputRun("legs", offsets[1], offsets[1], 1),
        InputRun("commands", offsets[2], offsets[2], 1),
    )
    assert (manifest.partition, manifest.worker, manifest.core_version) == (P, "test", CORE_VERSION)
    assert (manifest.rules, manifest.directory) == (RULES, ())
    assert manifest.clock_before_ms == T0_MS  # the first batch's log time
    hasher = OutputHasher()
    kinds = {harness.topics.ledger: "ledger", harness.topics.events: "events",
             harness.topics.legs: "legs", harness.topics.directory: "directory",
             harness.topics.dlq: "dlq"}  # fmt: skip
    for sent in batch.records:
        if sent.topic in kinds:
            hasher.add(kinds[sent.topic], sent.key, sent.value)  # type: ignore[arg-type]
    assert manifest.outputs == hasher.digest()
    assert (manifest.outputs.dead_letters, manifest.outputs.directory_entries) == (1, 1)
    assert manifest.outputs.journal_entries == len(harness.on(batch, harness.topics.ledger)) == 1
    [earlier] = harness.on(first, harness.topics.batches)
    assert earlier.value is not None
    assert decode_manifest(harness.serde, earlier.value).clock_before_ms == 0


def test_a_manifest_survives_its_avro_round_trip(harness: Harness) -> None:
    manifest = BatchManifest(
        partition=7, worker="paystream-ledger-w1", core_version="1", rules=Rules(),
        clock_before_ms=2**62, runs=runs_of([("commands", 4), ("commands", 9), ("legs", 2)]),
        directory=((0, 12), (1, 0)),
        outputs=OutputHasher().digest(),
    )  # fmt: skip
    assert manifest.runs == (InputRun("commands", 4, 9, 2), InputRun("legs", 2, 2, 1))
    encoded = encode_manifest(harness.serde, manifest)
    assert decode_manifest(harness.serde, encoded) == manifest
    assert len(encoded) < 200  # one small record per partition and batch
