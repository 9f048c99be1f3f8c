"""Read views and write-back of the worker's RocksDB tables.

The agent reads and writes a partition's rocksdict directly (faust's own
``table[key] = value`` sends its changelog record through a buffer that a
commit does not wait for) and sends the changelog record itself through the
partition's transaction. The bytes written locally are exactly the changelog
record's key and value, which is what faust's recovery writes back.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class TableView(Mapping[K, V], Generic[K, V]):
    """A read-only typed mapping over one rocksdict (raw bytes in, values out)."""

    def __init__(
        self,
        get_raw: Callable[[bytes], bytes | None],
        *,
        encode_key: Callable[[K], bytes],
        decode_value: Callable[[bytes], V],
    ) -> None:
        self._get_raw = get_raw
        self._encode_key = encode_key
        self._decode_value = decode_value

    def __getitem__(self, key: K) -> V:
        raw = self._get_raw(self._encode_key(key))
        if raw is None:
            raise KeyError(key)
        return self._decode_value(raw)

    def get(self, key: K, default: Any = None) -> Any:
        raw = self._get_raw(self._encode_key(key))
        return default if raw is None else self._decode_value(raw)

    def __iter__(self) -> Iterator[K]:
        raise TypeError("table views are for lookups; iterate the changelog instead")

    def __len__(self) -> int:
        raise TypeError("table views are for lookups; iterate the changelog instead")


def partition_db(table: Any, partition: int) -> Any:
    """The rocksdict of one partition of a faust table (raw mode)."""
    return table.data._db_for_partition(partition)


def forget_revoked_partitions(table: Any) -> None:
    """Delete a partition's local store when faust revokes it.

    faust keeps a revoked partition's RocksDB, with the changelog offset it had
    restored to; when the partition came back later (after other workers had
    written to it) faust's recovery stopped with ``ConsistencyError: The
    persisted offset ... is higher than the last offset`` (seen in the crash
    test). A local store is only a cache of the changelog, so a partition that
    comes back is restored from the changelog from scratch.
    """
    store = table.data
    revoke = store.revoke_partitions

    def revoke_and_forget(collection: Any, tps: Any) -> None:
        revoke(collection, tps)  # drops faust's handle; gc closes the rocksdict
        for tp in tps:
            if tp.topic in collection.changelog_topic.topics:
                shutil.rmtree(store.partition_path(tp.partition), ignore_errors=True)

    store.revoke_partitions = revoke_and_forget
