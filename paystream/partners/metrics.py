"""Prometheus metrics of ``paystream partners fanout`` (served like the rail's: the
supervisor's multiprocess directory, ``paystream.agents.metrics.serve``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

FANOUT_FORWARDED = Counter(
    "paystream_fanout_forwarded_total",
    "Events written to a partner's own topic, by partner (committed or not: a transaction"
    " that aborts is counted again when its events are forwarded once more).",
    ["partner"],
)
FANOUT_SKIPPED = Counter(
    "paystream_fanout_skipped_total",
    "Events not forwarded, by reason: no_topic (the partner has no topic: not onboarded, or"
    " a platform partner such as @ops), undecodable (an events record that is not an event).",
    ["reason"],
)
FANOUT_TRANSACTIONS = Histogram(
    "paystream_fanout_transaction_seconds",
    "One batch of events forwarded: produce, offsets and commit, in seconds.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
FANOUT_PARTNER_TOPICS = Gauge(
    "paystream_fanout_partner_topics",
    "Partner topics the fan-out writes to (at its last look at the broker's topics).",
    multiprocess_mode="max",
)
FANOUT_LAG_SECONDS = Gauge(
    "paystream_fanout_event_age_seconds",
    "Age of the last event forwarded when its transaction committed (written to events ->"
    " committed on the partner's topic), in seconds.",
    multiprocess_mode="max",
)
