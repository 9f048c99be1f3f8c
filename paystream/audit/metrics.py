"""Prometheus metrics of ``paystream sink postgres``.

Served like the workers' (``paystream.agents.metrics.serve`` over a
multiprocess directory prepared before prometheus_client is imported).
Partition labels take at most ``PAYSTREAM_PARTITIONS`` values.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

SINK_ROWS = Counter(
    "paystream_sink_rows_total",
    "Rows the Postgres sink wrote, by table (facts already stored are not counted).",
    ["table"],
)
SINK_BATCH_SECONDS = Histogram(
    "paystream_sink_batch_seconds",
    "Time to write one batch and its positions in one Postgres transaction.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
SINK_BATCH_RECORDS = Histogram(
    "paystream_sink_batch_records",
    "Records per batch.",
    buckets=(1, 10, 100, 500, 1_000, 2_500, 5_000, 10_000),
)
SINK_RETRIES = Counter(
    "paystream_sink_retries_total",
    "Batches retried, by reason: postgres (unreachable or failed) | fenced (another sink).",
    ["reason"],
)
SINK_LAG_RECORDS = Gauge(
    "paystream_sink_lag_records",
    "Records on the topic partition not yet in Postgres.",
    ["topic", "partition"],
    multiprocess_mode="livemax",
)
SINK_LAG_SECONDS = Gauge(
    "paystream_sink_lag_seconds",
    "Age of the newest record written, while records are still waiting (0 when caught up).",
    ["topic", "partition"],
    multiprocess_mode="livemax",
)
SINK_LEDGER_POSITION = Gauge(
    "paystream_sink_ledger_position",
    "The next ledger offset the sink will write, per ledger partition (stored in Postgres).",
    ["partition"],
    multiprocess_mode="livemax",
)
