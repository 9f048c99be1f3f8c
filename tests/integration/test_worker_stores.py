"""A worker's stores restore exactly the committed changelog, after pending transactions end."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from confluent_kafka import Producer

from paystream.agents import stores as stores_module
from paystream.agents.stores import RestoreError, Stores, TableWrite
from paystream.settings import KafkaConnection
from tests.integration.kafka_util import create_topic

pytestmark = pytest.mark.integration


def _producer(bootstrap: str, name: str) -> Producer:
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": name})
    producer.init_transactions(30)
    return producer


def _transaction(
    producer: Producer, topic: str, records: dict[bytes, bytes], *, commit: bool
) -> None:
    producer.begin_transaction()
    for key, value in records.items():
        producer.produce(topic, key=key, value=value, partition=1)
    producer.flush(30)
    if commit:
        producer.commit_transaction(30)
    else:
        producer.abort_transaction(30)


def _stores(bootstrap: str, topic: str, tmp_path: Path) -> Stores:
    return Stores(
        directory=tmp_path / "stores",
        kafka=KafkaConnection.plaintext(bootstrap),
        changelogs={"balances": topic},
        client_id=topic,
    )


def test_restore_reads_committed_records_and_waits_for_a_pending_transaction(
    kafka_bootstrap: str, unique_topic: str, tmp_path: Path
) -> None:
    create_topic(kafka_bootstrap, unique_topic, partitions=2)
    producer = _producer(kafka_bootstrap, f"{unique_topic}-writer")
    _transaction(producer, unique_topic, {b"k1": b"v1", b"k2": b"v2"}, commit=True)
    _transaction(producer, unique_topic, {b"k1": b"aborted", b"k9": b"aborted"}, commit=False)
    producer.begin_transaction()  # pending while the restore starts
    producer.produce(unique_topic, key=b"k3", value=b"v3", partition=1)
    producer.flush(30)

    stores = _stores(kafka_bootstrap, unique_topic, tmp_path)
    restored = threading.Event()
    restore = threading.Thread(target=lambda: (stores.hold({0, 1}), restored.set()))
    restore.start()
    try:
        assert not restored.wait(3.0), "restored while a transaction was still pending"
        producer.commit_transaction(30)
        assert restored.wait(60.0)
    finally:
        restore.join()
    get = stores.get("balances", 1)
    assert (get(b"k1"), get(b"k2"), get(b"k3"), get(b"k9")) == (b"v1", b"v2", b"v3", None)
    assert stores.get("balances", 0)(b"k1") is None
    assert stores.partitions == {0, 1}

    stores.apply([TableWrite("balances", 1, b"k2", b"new")])
    stores.hold({1})  # partition 1 is kept as it is, partition 0 is released
    assert stores.get("balances", 1)(b"k2") == b"new"
    assert stores.partitions == {1}
    assert (tmp_path / "stores" / "0" / ".checkpoint").exists()  # kept for a later gain
    stores.close()


def test_restore_gives_up_on_a_transaction_that_stays_open(
    kafka_bootstrap: str, unique_topic: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    create_topic(kafka_bootstrap, unique_topic, partitions=2)
    producer = _producer(kafka_bootstrap, f"{unique_topic}-writer")
    producer.begin_transaction()
    producer.produce(unique_topic, key=b"k", value=b"v", partition=1)
    producer.flush(30)
    monkeypatch.setattr(stores_module, "RESTORE_TIMEOUT_S", 2.0)
    stores = _stores(kafka_bootstrap, unique_topic, tmp_path)
    try:
        with pytest.raises(RestoreError, match="not read to their end"):
            stores.hold({1})
    finally:
        producer.abort_transaction(30)
        stores.close()
