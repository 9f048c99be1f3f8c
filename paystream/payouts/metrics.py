"""Prometheus metrics of ``paystream rail`` (served like the sink's: the supervisor's
multiprocess directory, ``paystream.agents.metrics.serve``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RAIL_REQUESTS = Counter(
    "paystream_rail_requests_total",
    "HTTP requests to the bank rail, by kind (send | status) and outcome (an HTTP status, or"
    " timeout / unreachable).",
    ["kind", "outcome"],
)
RAIL_OUTCOMES = Counter(
    "paystream_rail_outcomes_total",
    "Payouts the rail ended, by outcome (settled | failed) and, when failed, the bank's code.",
    ["outcome", "reason_code"],
)
RAIL_COMMANDS = Counter(
    "paystream_rail_commands_total",
    "Commands the connector put on Kafka (SendPayout, SettlePayout, FailPayout).",
    ["type"],
)
RAIL_IN_FLIGHT = Gauge(
    "paystream_rail_in_flight",
    "Payouts at the bank whose outcome is not known yet.",
    multiprocess_mode="livesum",
)
RAIL_RATE = Gauge(
    "paystream_rail_send_rate_per_s",
    "The send rate AIMD allows now (halved on each 429, raised by each instruction taken).",
    multiprocess_mode="livemax",
)
RAIL_GIVEN_UP = Counter(
    "paystream_rail_given_up_total",
    "Payouts left Sending after every retry round failed (the rail unreachable for hours):"
    " they are retried when the connector restarts, and never failed blindly.",
)
RAIL_BANK_SECONDS = Histogram(
    "paystream_rail_bank_seconds",
    "From the connector taking up a Sending payout to the bank's final answer (retries,"
    " throttling and status polls included).",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
