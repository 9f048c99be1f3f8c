"""Prometheus metrics of ``paystream analytics`` (one process: the sink and the page)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

ROWS = Counter(
    "paystream_analytics_rows_total",
    "Rows the analytics sink inserted, by table (a batch written again counts again).",
    ["table"],
)
BATCH_SECONDS = Histogram(
    "paystream_analytics_batch_seconds",
    "Time to insert one batch's rows and then its positions into ClickHouse.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
BATCH_RECORDS = Histogram(
    "paystream_analytics_batch_records",
    "Records per batch.",
    buckets=(1, 10, 100, 500, 1_000, 2_500, 5_000, 10_000, 20_000),
)
RETRIES = Counter(
    "paystream_analytics_retries_total",
    "Batches retried, by reason: store (ClickHouse unreachable) | fenced.",
    ["reason"],
)
LAG_RECORDS = Gauge(
    "paystream_analytics_lag_records",
    "Records on the topic partition not yet in ClickHouse.",
    ["topic", "partition"],
)
LAG_SECONDS = Gauge(
    "paystream_analytics_lag_seconds",
    "Age of the newest record written, while records are still waiting (0 when caught up).",
    ["topic", "partition"],
)
QUERY_SECONDS = Histogram(
    "paystream_analytics_query_seconds",
    "Time to answer one dashboard query, by query.",
    ["query"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0),
)
