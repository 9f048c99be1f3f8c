-- Payouts (issue 19): what a payout's events say beyond a payment's, each payout's
-- latest state, and every review decision. Written by the sink, read by the API.

-- A payout's events carry its screening hits, who changed its state and why, the state
-- before, and its batch and beneficiary (event schema v4). Absent on other events (and in
-- their audit bodies, so rows chained before these columns hash as they did).
ALTER TABLE payment_events
    ADD COLUMN rule_codes     text[] CHECK (cardinality(rule_codes) > 0),
    ADD COLUMN reason         text,
    ADD COLUMN actor          text,
    ADD COLUMN previous_type  text,
    ADD COLUMN payout         jsonb;

-- One row per payout id, folded from its own events in the order of its events partition.
CREATE TABLE payouts (
    payout_id                   text PRIMARY KEY,
    batch_id                    text NOT NULL,
    partner_id                  text NOT NULL,
    account_id                  text NOT NULL,
    amount_minor                bigint NOT NULL,
    currency                    char(3) NOT NULL,
    reference                   text,
    beneficiary_name            text NOT NULL,
    beneficiary_country         text NOT NULL,
    beneficiary_iban            text,
    beneficiary_bic             text,
    beneficiary_account_number  text,
    beneficiary_routing_number  text,
    status                      text NOT NULL,
    code                        text,
    reason                      text,
    rule_codes                  text[],
    created_at_ms               bigint NOT NULL,
    held_at_ms                  bigint,
    queued_at_ms                bigint,
    sending_at_ms               bigint,
    settled_at_ms               bigint,
    failed_at_ms                bigint,
    updated_at_ms               bigint NOT NULL,
    last_event_id               text NOT NULL,
    recorded_at                 timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payouts_batch ON payouts (partner_id, batch_id, payout_id);
CREATE INDEX payouts_status ON payouts (status, created_at_ms, payout_id);

-- Every review decision, from the payout event it made: the officer (from the token), the
-- decision, the reason, the rules the payout hit, its state before and after.
CREATE TABLE payout_reviews (
    event_id          text PRIMARY KEY REFERENCES payment_events (event_id),
    payout_id         text NOT NULL,
    partner_id        text NOT NULL,
    decision          text NOT NULL CHECK (decision IN ('approve', 'reject', 'override')),
    officer           text NOT NULL,
    reason            text,
    rule_codes        text[],
    status_before     text NOT NULL,
    status_after      text NOT NULL,
    decided_at_ms     bigint NOT NULL,
    recorded_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payout_reviews_decided ON payout_reviews (decided_at_ms, event_id);
CREATE INDEX payout_reviews_payout ON payout_reviews (payout_id, decided_at_ms);

GRANT SELECT, INSERT ON payout_reviews TO paystream_sink;
GRANT SELECT, INSERT, UPDATE ON payouts TO paystream_sink;
