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
        directory=directory, bootstrap=bootstrap, changelogs={TABLE: topic}, client_id=topic
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
