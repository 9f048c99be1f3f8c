"""Stores kept across restarts: with a checkpoint only the changelog's tail is read.

On the real broker: a clean release writes a checkpoint and the next gain
reads only what was written since; a store with no checkpoint (what a crash
before the first checkpoint leaves) is wiped and restored in full; a
checkpoint that does not fit the changelog (the topic was recreated, or it
claims more than the changelog holds) is refused and the store rebuilt.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from prometheus_client import REGISTRY
from rocksdict import Options, Rdict

from paystream.agents import checkpoint
from paystream.agents.checkpoint import ChangelogPosition
from paystream.agents.stores import Stores
from paystream.settings import KafkaConnection
from tests.integration.kafka_util import create_topic

pytestmark = pytest.mark.integration

TABLE = "balances"
PARTITION = 0
ADMIN_TIMEOUT_S = 30.0
RECREATE_ATTEMPTS_MAX = 60


def _write(bootstrap: str, topic: str, records: Mapping[bytes, bytes | None]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    for key, value in records.items():
        producer.produce(topic, key=key, value=value, partition=PARTITION)
    assert producer.flush(ADMIN_TIMEOUT_S) == 0


def _stores(bootstrap: str, topic: str, directory: Path) -> Stores:
    return Stores(
        directory=directory,
        kafka=KafkaConnection.plaintext(bootstrap),
        changelogs={TABLE: topic},
        client_id=topic,
    )


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _hold(stores: Stores) -> tuple[int, str]:
    """Hold PARTITION; the records it restored and how its store was opened."""
    restored = _sample("paystream_worker_restored_records_total", store=TABLE)
    opens = {r: _sample("paystream_worker_store_opens_total", start=r) for r in _starts()}
    stores.hold({PARTITION})
    (start,) = [
        r for r in _starts() if _sample("paystream_worker_store_opens_total", start=r) > opens[r]
    ]
    return int(_sample("paystream_worker_restored_records_total", store=TABLE) - restored), start


def _starts() -> tuple[str, ...]:
    return ("checkpoint", *checkpoint.REFUSALS)


def _rows(stores: Stores, keys: list[bytes]) -> dict[bytes, bytes | None]:
    get = stores.get(TABLE, PARTITION)
    return {key: get(key) for key in keys}


def _keys(prefix: str, count: int) -> list[bytes]:
    return [f"{prefix}{i}".encode() for i in range(count)]


def _held_once(bootstrap: str, topic: str, directory: Path, *, records: int, value: bytes) -> int:
    """A changelog of ``records`` keys, restored into ``directory`` and released cleanly.

    Returns how many records that first restore read.
    """
    create_topic(bootstrap, topic, partitions=1)
    _write(bootstrap, topic, {key: value for key in _keys("k", records)})
    stores = _stores(bootstrap, topic, directory)
    restored, start = _hold(stores)
    stores.close()  # a clean stop: checkpointed
    assert start == "missing"
    return restored


def test_a_clean_release_then_a_gain_reads_only_the_tail(
    kafka_bootstrap: str, unique_topic: str, tmp_path: Path
) -> None:
    kept = tmp_path / "kept"
    assert _held_once(kafka_bootstrap, unique_topic, kept, records=500, value=b"v1") == 500
    tail: dict[bytes, bytes | None] = {key: b"v2" for key in _keys("k", 10)}
    tail |= {key: None for key in _keys("k", 15)[10:]}  # tombstones
    tail |= {key: b"new" for key in _keys("n", 5)}
    _write(kafka_bootstrap, unique_topic, tail)

    again = _stores(kafka_bootstrap, unique_topic, kept)
    fresh = _stores(kafka_bootstrap, unique_topic, tmp_path / "fresh")
    try:
        assert _hold(again) == (20, "checkpoint")
        assert _hold(fresh) == (520, "missing")
        keys = _keys("k", 500) + _keys("n", 5)
        rows = _rows(again, keys)
        assert rows == _rows(fresh, keys)
        assert (rows[b"k0"], rows[b"k12"], rows[b"k20"], rows[b"n4"]) == (
            b"v2",
            None,
            b"v1",
            b"new",
        )
        assert again.position(TABLE, PARTITION) == 520
    finally:
        again.close()
        fresh.close()


def test_a_store_without_a_checkpoint_is_wiped_and_restored_in_full(
    kafka_bootstrap: str, unique_topic: str, tmp_path: Path
) -> None:
    _held_once(kafka_bootstrap, unique_topic, tmp_path, records=50, value=b"v")
    # What a crash before the first checkpoint leaves: a store, no checkpoint,
    # and (say) a row that no committed changelog record explains.
    (tmp_path / str(PARTITION) / checkpoint.CHECKPOINT_FILE).unlink()
    db = Rdict(str(tmp_path / str(PARTITION) / TABLE), Options(raw_mode=True))
    db[b"stray"] = b"?"
    db.close()

    again = _stores(kafka_bootstrap, unique_topic, tmp_path)
    try:
        assert _hold(again) == (50, "missing")
        assert _rows(again, [b"stray", b"k49"]) == {b"stray": None, b"k49": b"v"}
    finally:
        again.close()


def _recreate(bootstrap: str, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.delete_topics([topic])[topic].result(timeout=ADMIN_TIMEOUT_S)
    for _ in range(RECREATE_ATTEMPTS_MAX):  # the deletion completes in the background
        try:
            create_topic(bootstrap, topic, partitions=1)
            return
        except Exception as error:
            if "TOPIC_ALREADY_EXISTS" not in str(error) and "marked for deletion" not in str(error):
                raise
            time.sleep(0.5)
    raise AssertionError(f"{topic} was not recreated")


def test_a_checkpoint_of_a_recreated_changelog_is_refused_and_the_store_rebuilt(
    kafka_bootstrap: str, unique_topic: str, tmp_path: Path
) -> None:
    _held_once(kafka_bootstrap, unique_topic, tmp_path, records=50, value=b"old")
    _recreate(kafka_bootstrap, unique_topic)
    _write(kafka_bootstrap, unique_topic, {key: b"new" for key in _keys("k", 5)})

    again = _stores(kafka_bootstrap, unique_topic, tmp_path)
    try:
        assert _hold(again) == (5, "topic_recreated")
        assert _rows(again, [b"k0", b"k4", b"k5", b"k49"]) == {
            b"k0": b"new",
            b"k4": b"new",
            b"k5": None,
            b"k49": None,
        }
    finally:
        again.close()


def test_a_checkpoint_ahead_of_its_changelog_is_refused(
    kafka_bootstrap: str, unique_topic: str, tmp_path: Path
) -> None:
    _held_once(kafka_bootstrap, unique_topic, tmp_path, records=30, value=b"v")
    path = tmp_path / str(PARTITION) / checkpoint.CHECKPOINT_FILE
    saved = checkpoint.read(path)
    assert isinstance(saved, checkpoint.Checkpoint)
    position = saved.positions[TABLE]
    ahead = ChangelogPosition(topic=position.topic, topic_id=position.topic_id, offset=31)
    checkpoint.write(
        path,
        checkpoint.Checkpoint(
            partition=PARTITION, written_at_ms=saved.written_at_ms, positions={TABLE: ahead}
        ),
    )

    again = _stores(kafka_bootstrap, unique_topic, tmp_path)
    try:
        assert _hold(again) == (30, "ahead_of_changelog")
    finally:
        again.close()


def test_a_catch_up_cut_short_by_a_release_resumes_exactly(
    kafka_bootstrap: str, unique_topic: str, tmp_path: Path
) -> None:
    """A revoke in the middle of a long restore keeps its progress, and loses nothing."""
    create_topic(kafka_bootstrap, unique_topic, partitions=1)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "transactional.id": unique_topic})
    producer.init_transactions(ADMIN_TIMEOUT_S)
    for round_ in range(20):  # committed and aborted transactions, keys overwritten
        producer.begin_transaction()
        for i in range(2_000):
            key = f"k{(i * 7 + round_) % 3_000}".encode()
            value = None if i % 97 == 0 else f"{round_}.{i}".encode()
            producer.produce(unique_topic, key=key, value=value, partition=PARTITION)
        producer.flush(ADMIN_TIMEOUT_S)
        if round_ % 5 == 4:
            producer.abort_transaction(ADMIN_TIMEOUT_S)
        else:
            producer.commit_transaction(ADMIN_TIMEOUT_S)
    stores = _stores(kafka_bootstrap, unique_topic, tmp_path / "cut")
    stores.gain({PARTITION})
    stores.begin_catch_up()
    for _ in range(100):  # read a little, then the partition is revoked
        stores.catch_up(budget_s=0.001)
        if stores.position(TABLE, PARTITION) > 0:
            break
    assert not stores.caught_up
    stores.release_all()
    assert 0 < stores_position_on_disk(tmp_path / "cut") < 40_000
    stores.hold({PARTITION})
    fresh = _stores(kafka_bootstrap, unique_topic, tmp_path / "fresh")
    fresh.hold({PARTITION})
    try:
        keys = _keys("k", 3_000)
        assert _rows(stores, keys) == _rows(fresh, keys)
    finally:
        stores.close()
        fresh.close()


def stores_position_on_disk(directory: Path) -> int:
    saved = checkpoint.read(directory / str(PARTITION) / checkpoint.CHECKPOINT_FILE)
    assert isinstance(saved, checkpoint.Checkpoint)
    return saved.positions[TABLE].offset


def test_a_store_that_caught_up_is_left_alone_while_others_still_catch_up(
    kafka_bootstrap: str, unique_topic: str, tmp_path: Path
) -> None:
    """Found by bench/restore.py at 22 M records: the reader kept fetching a partition that
    had caught up (and was processing), and wrote older changelog records over the
    batches' newer writes while other partitions were still restoring."""
    create_topic(kafka_bootstrap, unique_topic, partitions=2)
    producer = Producer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "linger.ms": 5,
            "queue.buffering.max.messages": 500_000,
        }
    )
    producer.produce(unique_topic, key=b"small", value=b"v0", partition=0)
    for i in range(200_000):  # partition 1 takes many slices to restore
        producer.produce(unique_topic, key=f"k{i % 5_000}".encode(), value=b"x", partition=1)
    assert producer.flush(ADMIN_TIMEOUT_S) == 0
    stores = Stores(
        directory=tmp_path, kafka=KafkaConnection.plaintext(kafka_bootstrap),
        changelogs={TABLE: unique_topic},
        client_id=unique_topic,
    )  # fmt: skip
    try:
        stores.gain({0, 1})
        stores.begin_catch_up()
        ready: set[int] = set()
        for _ in range(1_000):
            ready |= stores.catch_up(budget_s=0.01)
            if 0 in ready:
                break
        assert ready == {0}, "partition 1 restored too fast to show anything"
        # Partition 0 now processes batches: its store is written by apply() only. A
        # record appended to its changelog after its catch-up is one a batch applies.
        producer.produce(unique_topic, key=b"small", value=b"written by a batch", partition=0)
        assert producer.flush(ADMIN_TIMEOUT_S) == 0
        stores.apply([], {(TABLE, 0): stores.position(TABLE, 0) + 1})
        while not stores.caught_up:
            stores.catch_up(budget_s=0.5)
        assert stores.get(TABLE, 0)(b"small") == b"v0"  # not the catch-up's to write
    finally:
        stores.close()
