-- A payment's reference (the sender's own words: an invoice number, a remittance line),
-- carried by every event of the payment. Bounded like the commands that carry it
-- (paystream.ledger.models.REFERENCE_LENGTH_MAX) and absent on rows from before it.
ALTER TABLE payment_events
    ADD COLUMN reference text CHECK (char_length(reference) BETWEEN 1 AND 140);
ALTER TABLE payments
    ADD COLUMN reference text CHECK (char_length(reference) BETWEEN 1 AND 140);
