-- Email notifications (issue 21): an outbox of emails to account holders and partner
-- contacts. Rows are inserted by `paystream notify` (from events, in the transaction of its
-- consumer positions) and by the webhook service (an exhausted delivery), and worked by the
-- notifier's sender: pending -> sent, or -> dead after its attempts bound (the DLQ).

CREATE TABLE notifications (
    -- Deterministic (source id + recipient role): a re-consumed event inserts nothing twice.
    -- The email's Message-ID derives from it, so a resend is recognisable as the same email.
    notification_id  text PRIMARY KEY CHECK (length(notification_id) BETWEEN 1 AND 200),
    template         text NOT NULL CHECK (template ~ '^[a-z][a-z0-9_]{0,63}$'),
    recipient        text NOT NULL CHECK (length(recipient) BETWEEN 3 AND 254),
    context          jsonb NOT NULL CHECK (jsonb_typeof(context) = 'object'),
    status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'dead')),
    attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    created_at       timestamptz NOT NULL DEFAULT now(),
    sent_at          timestamptz,
    dead_at          timestamptz,
    last_error       text CHECK (length(last_error) <= 2000),
    CHECK ((status = 'sent') = (sent_at IS NOT NULL)),
    CHECK ((status = 'dead') = (dead_at IS NOT NULL))
);
-- The sender's claim: due pending rows, oldest first.
CREATE INDEX notifications_due ON notifications (next_attempt_at, notification_id)
    WHERE status = 'pending';
-- The DLQ: dead rows, for its depth gauge and for an operator to look through.
CREATE INDEX notifications_dead ON notifications (dead_at, notification_id)
    WHERE status = 'dead';

GRANT SELECT, INSERT, UPDATE ON notifications TO paystream_sink;
GRANT SELECT ON account_contacts TO paystream_sink;
