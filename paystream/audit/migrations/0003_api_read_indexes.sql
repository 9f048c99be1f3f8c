-- Indexes for the API's keyset-paged lists (paystream/api/read_models.py):
-- a partner's accounts by id, a partner's payments by creation time.
CREATE INDEX accounts_partner ON accounts (partner_id, account_id);
CREATE INDEX payments_partner_created ON payments (partner_id, created_at_ms, payment_id);
