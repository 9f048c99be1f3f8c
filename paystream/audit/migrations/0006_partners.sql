-- Partners (issue 20): who is onboarded, where their webhooks go, and the account holders'
-- email addresses. Written by `paystream partners` and the API, read by the fan-out, the
-- webhook delivery service and the notifier. Contact details live here, never in the
-- retained command log: an address can be corrected or erased, a command cannot.

CREATE TABLE partners (
    partner_id          text PRIMARY KEY CHECK (partner_id ~ '^[a-z0-9][a-z0-9-]{0,39}$'),
    name                text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    contact_email       text NOT NULL CHECK (length(contact_email) BETWEEN 3 AND 254),
    kafka_principal     text NOT NULL,
    keycloak_client_id  text NOT NULL,
    status              text NOT NULL CHECK (status IN ('active', 'removed')),
    created_at          timestamptz NOT NULL DEFAULT now(),
    secret_rotated_at   timestamptz,
    removed_at          timestamptz
);

-- A partner's webhook endpoints; the secret signs deliveries (Standard Webhooks, whsec_...).
CREATE TABLE webhook_endpoints (
    endpoint_id  text PRIMARY KEY,
    partner_id   text NOT NULL REFERENCES partners (partner_id),
    url          text NOT NULL CHECK (url ~ '^https?://' AND length(url) <= 2000),
    secret       text NOT NULL,
    enabled      boolean NOT NULL DEFAULT true,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_endpoints_partner ON webhook_endpoints (partner_id) WHERE enabled;

-- The address an account's holder is emailed at (set by the account's partner).
CREATE TABLE account_contacts (
    account_id  text PRIMARY KEY,
    partner_id  text NOT NULL,
    email       text NOT NULL CHECK (length(email) BETWEEN 3 AND 254),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
