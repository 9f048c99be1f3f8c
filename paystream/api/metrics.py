"""Prometheus metrics of the API process (one process per port; labels from closed sets)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    "paystream_api_requests",
    "HTTP requests answered, by route template, method and status code",
    ["route", "method", "status"],
)
REQUEST_SECONDS = Histogram(
    "paystream_api_request_seconds",
    "Time to answer a request, by route template and method",
    ["route", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
IN_FLIGHT = Gauge("paystream_api_in_flight", "Requests being answered now")
AUTH_FAILURES = Counter(
    "paystream_api_auth_failures", "Requests refused by authentication or scope", ["reason"]
)
RATE_LIMITED = Counter("paystream_api_rate_limited", "Requests refused with 429")
COMMANDS = Counter(
    "paystream_api_commands",
    "Commands submitted, by type and outcome (accepted, refused_by_kafka)",
    ["type", "outcome"],
)
WAITS = Counter(
    "paystream_api_waits",
    "How waits for a command's answers ended: answered, ended (terminal within Prefer: wait),"
    " timed_out",
    ["stage", "outcome"],
)
READ_MODEL_LAG = Gauge(
    "paystream_api_read_model_lag_records",
    "Records of the ledger and events logs the Postgres read models do not reflect yet"
    " (as of the last /readyz)",
)
