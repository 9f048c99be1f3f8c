-- Signed webhooks (AtlasPay F-003): the durable delivery queue of `paystream webhooks`.
-- A delivery is one event for one endpoint. It is inserted when the service consumes the
-- event, in the transaction of its consumer positions (sink_offsets), and worked by the
-- dispatcher until it is delivered (a 2xx) or dead (its retry schedule exhausted: the DLQ).

CREATE TABLE webhook_deliveries (
    -- The Standard Webhooks `webhook-id` (msg_ + a digest of endpoint and event): a
    -- re-consumed event inserts nothing twice, and every retry carries the same id.
    delivery_id       text PRIMARY KEY CHECK (delivery_id ~ '^msg_[0-9a-f]{32}$'),
    endpoint_id       text NOT NULL REFERENCES webhook_endpoints (endpoint_id),
    partner_id        text NOT NULL,
    event_id          text NOT NULL,
    event_type        text NOT NULL CHECK (event_type ~ '^[a-z]+\.[a-z_]+$'),
    payment_id        text NOT NULL,
    payload           jsonb NOT NULL CHECK (jsonb_typeof(payload) = 'object'),
    status            text NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'delivered', 'dead')),
    -- A round is one pass over the retry schedule; a retry or replay by hand starts another.
    round             integer NOT NULL DEFAULT 1 CHECK (round >= 1),
    attempts          integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    attempts_total    integer NOT NULL DEFAULT 0 CHECK (attempts_total >= attempts),
    next_attempt_at   timestamptz NOT NULL,
    -- Set while a dispatcher has the delivery in flight; a dispatcher that dies mid-request
    -- leaves it, and the delivery is due again when the lease runs out.
    leased_until      timestamptz,
    event_at          timestamptz NOT NULL,
    recorded_at       timestamptz NOT NULL DEFAULT now(),
    first_attempt_at  timestamptz,
    last_attempt_at   timestamptz,
    delivered_at      timestamptz,
    dead_at           timestamptz,
    last_status       integer,
    last_error        text CHECK (length(last_error) <= 2000),
    UNIQUE (endpoint_id, event_id),
    CHECK ((status = 'dead') = (dead_at IS NOT NULL))
);
-- The dispatcher's claim: each endpoint's due pending deliveries, oldest due first; and
-- the queue's depth.
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (endpoint_id, next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
-- Requests in flight per endpoint (the per-endpoint concurrency bound).
CREATE INDEX webhook_deliveries_leased ON webhook_deliveries (endpoint_id, leased_until)
    WHERE leased_until IS NOT NULL;
-- The API: a partner's deliveries, newest first, by status; an endpoint's, for a replay.
CREATE INDEX webhook_deliveries_partner ON webhook_deliveries
    (partner_id, status, event_at DESC, delivery_id DESC);
CREATE INDEX webhook_deliveries_partner_all ON webhook_deliveries
    (partner_id, event_at DESC, delivery_id DESC);
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, event_at);
-- The DLQ: dead deliveries, for its depth gauge and for an operator to look through.
CREATE INDEX webhook_deliveries_dead ON webhook_deliveries (dead_at) WHERE status = 'dead';

-- Every attempt, for the log and the API (an attempt's number counts across rounds).
CREATE TABLE webhook_attempts (
    delivery_id       text NOT NULL REFERENCES webhook_deliveries (delivery_id),
    attempt           integer NOT NULL CHECK (attempt >= 1),
    round             integer NOT NULL CHECK (round >= 1),
    started_at        timestamptz NOT NULL,
    duration_ms       integer NOT NULL CHECK (duration_ms >= 0),
    outcome           text NOT NULL CHECK (outcome IN
                      ('delivered', 'http_error', 'timeout', 'unreachable', 'circuit_open')),
    http_status       integer,
    error             text CHECK (length(error) <= 2000),
    response_excerpt  text CHECK (length(response_excerpt) <= 1000),
    PRIMARY KEY (delivery_id, attempt)
);

-- Each endpoint's circuit breaker (paystream.webhooks.breaker).
CREATE TABLE webhook_endpoint_state (
    endpoint_id           text PRIMARY KEY REFERENCES webhook_endpoints (endpoint_id),
    circuit               text NOT NULL DEFAULT 'closed'
                          CHECK (circuit IN ('closed', 'open', 'half_open')),
    consecutive_failures  integer NOT NULL DEFAULT 0 CHECK (consecutive_failures >= 0),
    opened_count          integer NOT NULL DEFAULT 0 CHECK (opened_count >= 0),
    open_until            timestamptz,
    updated_at            timestamptz NOT NULL DEFAULT now()
);

-- The Idempotency-Key of the API's webhook POSTs (retry, replay): the answer a key got.
CREATE TABLE webhook_requests (
    partner_id       text NOT NULL,
    idempotency_key  text NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    fingerprint      text NOT NULL,
    status_code      integer NOT NULL,
    response         jsonb NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (partner_id, idempotency_key)
);
CREATE INDEX webhook_requests_created ON webhook_requests (created_at);

GRANT SELECT, INSERT, UPDATE ON webhook_deliveries, webhook_endpoint_state TO paystream_sink;
GRANT SELECT, INSERT ON webhook_attempts TO paystream_sink;
GRANT SELECT ON webhook_endpoints, partners TO paystream_sink;
