"""Prometheus metrics of ``paystream webhooks`` (served like the sink's: the supervisor's
multiprocess directory, ``paystream.agents.metrics.serve``).

The seed's two figures come from here: the first attempt's latency from the state change
(``paystream_webhooks_first_attempt_seconds``: its P95) and the delivery rate (delivered
against dead, ``paystream_webhooks_finished_total``). The queue's depth, the DLQ's and the
circuits are read from Postgres every few seconds, so every copy reports the same values.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 900, 3600)

ATTEMPTS = Counter(
    "paystream_webhooks_attempts_total",
    "Delivery attempts by outcome: delivered (2xx) | http_error | timeout | unreachable |"
    " circuit_open (no request: the endpoint's circuit was open).",
    ["outcome"],
)
FINISHED = Counter(
    "paystream_webhooks_finished_total",
    "Deliveries that ended, by status: delivered | dead (retries exhausted: the DLQ).",
    ["status"],
)
INGESTED = Counter(
    "paystream_webhooks_ingested_total",
    "Deliveries created from consumed events (one per event and endpoint; a re-consumed"
    " event creates none).",
)
FIRST_ATTEMPT_SECONDS = Histogram(
    "paystream_webhooks_first_attempt_seconds",
    "From the state change (the event's time) to the start of the delivery's first attempt.",
    buckets=LATENCY_BUCKETS_S,
)
REQUEST_SECONDS = Histogram(
    "paystream_webhooks_request_seconds",
    "One HTTP request to an endpoint, to its answer, timeout or refusal.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
IN_FLIGHT = Gauge(
    "paystream_webhooks_in_flight",
    "Requests this dispatcher has open to endpoints.",
    multiprocess_mode="livesum",
)
QUEUE_DEPTH = Gauge(
    "paystream_webhooks_deliveries",
    "Deliveries in Postgres by status: pending (waiting or in flight) | due (pending and"
    " due now) | dead (the DLQ's depth).",
    ["status"],
    multiprocess_mode="livemax",
)
CIRCUITS = Gauge(
    "paystream_webhooks_circuits",
    "Endpoints by circuit state: closed | open | half_open.",
    ["state"],
    multiprocess_mode="livemax",
)
LAG_RECORDS = Gauge(
    "paystream_webhooks_lag_records",
    "Events on the topic partition not yet turned into deliveries.",
    ["partition"],
    multiprocess_mode="livemax",
)
RETRIES = Counter(
    "paystream_webhooks_ingest_retries_total",
    "Ingestion batches retried, by reason: postgres (unreachable or failed) | fenced.",
    ["reason"],
)
