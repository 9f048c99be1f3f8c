"""Prometheus metrics of ``paystream notify`` (served like the sink's: a multiprocess directory
prepared before prometheus_client is imported, ``paystream.agents.metrics.serve``).

The outbox gauges (``queue_depth``, ``dlq_depth``, ``oldest_pending_seconds``) are counts
of the shared ``notifications`` table, refreshed by every copy of the service: ``livemax``
shows the value once, however many copies run. ``dlq_depth`` is the DLQ depth the
Grafana board shows.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

NOTIFY_ENQUEUED = Counter(
    "paystream_notify_enqueued_total",
    "Emails the notifier put in the outbox from events, by template (repeats not counted).",
    ["template"],
)
NOTIFY_SENT = Counter(
    "paystream_notify_sent_total",
    "Emails the SMTP server accepted, by template.",
    ["template"],
)
NOTIFY_FAILURES = Counter(
    "paystream_notify_send_failures_total",
    "Failed send attempts, by reason: connect (the SMTP server unreachable or refusing the"
    " session; no email's attempt is used) | temporary (4xx, a dropped connection: retried"
    " with backoff) | permanent (5xx for the recipient: dead now) | render (the template"
    " failed: dead now).",
    ["reason"],
)
NOTIFY_DEAD_TOTAL = Counter(
    "paystream_notify_dead_total",
    "Emails this process moved to the DLQ (status dead), by reason (exhausted | permanent |"
    " render).",
    ["reason"],
)
NOTIFY_DLQ_DEPTH = Gauge(
    "paystream_notify_dlq_depth",
    "DLQ depth: emails in the outbox that will not be sent (status dead).",
    multiprocess_mode="livemax",
)
NOTIFY_QUEUE_DEPTH = Gauge(
    "paystream_notify_queue_depth",
    "Queue depth: emails in the outbox waiting to be sent (due or backing off).",
    multiprocess_mode="livemax",
)
NOTIFY_OLDEST_PENDING_SECONDS = Gauge(
    "paystream_notify_oldest_pending_seconds",
    "Age of the oldest email still waiting to be sent (0 when none waits).",
    multiprocess_mode="livemax",
)
NOTIFY_SEND_SECONDS = Histogram(
    "paystream_notify_send_seconds",
    "Time to hand one email to the SMTP server (the message's exchange, the session excluded).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
NOTIFY_INGEST_BATCH_SECONDS = Histogram(
    "paystream_notify_ingest_batch_seconds",
    "Time to write one batch of events' emails and its positions in one Postgres transaction.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
NOTIFY_INGEST_RETRIES = Counter(
    "paystream_notify_ingest_retries_total",
    "Event batches retried, by reason: postgres (unreachable or failed) | fenced (another copy).",
    ["reason"],
)
NOTIFY_LAG_RECORDS = Gauge(
    "paystream_notify_lag_records",
    "Events on the partition not yet taken into the outbox.",
    ["partition"],
    multiprocess_mode="livemax",
)
