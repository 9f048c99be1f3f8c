-- The audit store: what the ledger recorded, the read models the API queries,
-- a hash-chained audit log, and the sink's consumer positions.
-- Written by `paystream sink postgres` only; amounts are integer minor units.

CREATE TABLE journal_entries (
    entry_id          text PRIMARY KEY,
    payment_id        text NOT NULL,
    kind              text NOT NULL,
    phase             text NOT NULL CHECK (phase IN ('posted', 'pending', 'post', 'void')),
    pending_entry_id  text,
    partner_id        text NOT NULL,
    account_id        text NOT NULL,
    issued_at_ms      bigint NOT NULL,
    ledger_partition  integer NOT NULL,
    ledger_offset     bigint NOT NULL,
    recorded_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (ledger_partition, ledger_offset)
);
CREATE INDEX journal_entries_payment ON journal_entries (payment_id);

CREATE TABLE ledger_lines (
    entry_id      text NOT NULL REFERENCES journal_entries (entry_id),
    line_no       integer NOT NULL CHECK (line_no >= 0),
    account_id    text NOT NULL,
    currency      char(3) NOT NULL,
    side          text NOT NULL CHECK (side IN ('debit', 'credit')),
    amount_minor  bigint NOT NULL CHECK (amount_minor >= 0),
    phase         text NOT NULL,
    PRIMARY KEY (entry_id, line_no)
);
CREATE INDEX ledger_lines_account ON ledger_lines (account_id, entry_id);

-- The balance projection (TigerBeetle's four totals, 128-bit), kept by the sink
-- from ledger lines, with the status and owner from account events.
CREATE TABLE accounts (
    account_id             text PRIMARY KEY,
    currency               char(3),
    partner_id             text,
    status                 text,
    posted_debits_minor    numeric(39, 0) NOT NULL DEFAULT 0,
    posted_credits_minor   numeric(39, 0) NOT NULL DEFAULT 0,
    pending_debits_minor   numeric(39, 0) NOT NULL DEFAULT 0,
    pending_credits_minor  numeric(39, 0) NOT NULL DEFAULT 0,
    version                bigint NOT NULL DEFAULT 0,
    ledger_partition       integer,
    ledger_offset          bigint,
    updated_at             timestamptz NOT NULL DEFAULT now(),
    CHECK (posted_debits_minor >= 0 AND posted_credits_minor >= 0
           AND pending_debits_minor >= 0 AND pending_credits_minor >= 0)
);

-- One row per payment (command) id: its latest status and when each step happened.
CREATE TABLE payments (
    payment_id               text PRIMARY KEY,
    command_type             text NOT NULL,
    partner_id               text NOT NULL,
    account_id               text NOT NULL,
    counterparty_account_id  text,
    amount_minor             bigint,
    currency                 char(3),
    status                   text NOT NULL,
    code                     text,
    created_at_ms            bigint NOT NULL,
    debited_at_ms            bigint,
    completed_at_ms          bigint,
    reversed_at_ms           bigint,
    rejected_at_ms           bigint,
    updated_at_ms            bigint NOT NULL,
    last_event_id            text NOT NULL,
    recorded_at              timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payments_account ON payments (account_id, created_at_ms);
CREATE INDEX payments_partner_status ON payments (partner_id, status, created_at_ms);

-- Every event, in the order of its events partition: the status history.
CREATE TABLE payment_events (
    event_id                 text PRIMARY KEY,
    payment_id               text NOT NULL,
    type                     text NOT NULL,
    command_type             text NOT NULL,
    partner_id               text NOT NULL,
    account_id               text NOT NULL,
    counterparty_account_id  text,
    amount_minor             bigint,
    currency                 char(3),
    code                     text,
    original_payment_id      text,
    issued_at_ms             bigint NOT NULL,
    events_partition         integer NOT NULL,
    events_offset            bigint NOT NULL,
    recorded_at              timestamptz NOT NULL DEFAULT now(),
    UNIQUE (events_partition, events_offset)
);
CREATE INDEX payment_events_payment ON payment_events (payment_id, events_partition, events_offset);

CREATE TABLE dlq_records (
    dlq_partition     integer NOT NULL,
    dlq_offset        bigint NOT NULL,
    reason            text NOT NULL,
    detail            text,
    origin_topic      text,
    origin_partition  integer,
    origin_offset     bigint,
    record_key        bytea,
    payload_prefix    bytea,
    payload_size      bigint NOT NULL,
    payload_sha256    text NOT NULL,
    recorded_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (dlq_partition, dlq_offset)
);
CREATE INDEX dlq_records_reason ON dlq_records (reason, recorded_at);

-- Append-only and hash-chained, one chain per source topic-partition (so several
-- sinks append without waiting for each other, and a chain is a pure function of
-- its partition): hash = sha256(prev_hash || body), body the canonical JSON row.
CREATE TABLE audit_log (
    chain        text NOT NULL,
    seq          bigint NOT NULL CHECK (seq >= 1),
    kind         text NOT NULL,
    ref          text NOT NULL,
    body         text NOT NULL,
    prev_hash    bytea NOT NULL CHECK (length(prev_hash) = 32),
    hash         bytea NOT NULL CHECK (length(hash) = 32),
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (chain, seq),
    UNIQUE (kind, ref)
);

CREATE FUNCTION audit_log_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_log_append_only
    BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_refuse_change();
CREATE TRIGGER audit_log_no_truncate
    BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_refuse_change();

-- Where each sink consumer group stands: written in the transaction of the rows.
CREATE TABLE sink_offsets (
    consumer     text NOT NULL,
    topic        text NOT NULL,
    partition    integer NOT NULL,
    next_offset  bigint NOT NULL CHECK (next_offset >= 0),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, topic, partition)
);

-- The sink's role may insert everywhere, update only the read models and its
-- offsets, and never update or delete a recorded fact or an audit row.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'paystream_sink') THEN
        CREATE ROLE paystream_sink NOLOGIN;
    END IF;
END
$$;
GRANT SELECT, INSERT ON journal_entries, ledger_lines, payment_events, dlq_records, audit_log
    TO paystream_sink;
GRANT SELECT, INSERT, UPDATE ON accounts, payments, sink_offsets TO paystream_sink;
