-- A line's phase repeats its entry's: refuse any value the ledger does not have
-- (audit verify also checks it equals the entry's).
ALTER TABLE ledger_lines
    ADD CONSTRAINT ledger_lines_phase CHECK (phase IN ('posted', 'pending', 'post', 'void'));
