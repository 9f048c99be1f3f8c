"""A minimal faust-streaming app with a RocksDB (rocksdict) table.

Run as ``python -m tests.integration.faust_probe worker``; configured by the
PROBE_* environment variables. Counts messages per key in a table and emits
``key:count`` for each message, so a restart that lost the table shows up as a
count starting again from 1.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import faust

app = faust.App(
    os.environ["PROBE_APP_ID"],
    broker=f"kafka://{os.environ['PROBE_BOOTSTRAP']}",
    datadir=os.environ["PROBE_DATADIR"],
    store="rocksdb://",
    topic_partitions=4,
    topic_replication_factor=1,
    web_enabled=False,
)
source = app.topic(os.environ["PROBE_SOURCE"], key_type=str, value_type=str, partitions=4)
sink = app.topic(os.environ["PROBE_SINK"], key_type=str, value_type=str, partitions=4)
counts = app.Table("counts", default=int, partitions=4)


@app.agent(source)
async def count(stream: faust.StreamT[str]) -> AsyncIterator[None]:
    async for key, _value in stream.items():
        counts[key] += 1
        await sink.send(key=key, value=f"{key}:{counts[key]}")
        yield None


if __name__ == "__main__":
    app.main()
