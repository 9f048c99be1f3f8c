"""Payouts' processes and tools around the pure core (``paystream.ledger.payouts``): the
screening rules' publication and the bank-rail connector."""
