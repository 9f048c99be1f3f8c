"""The bank rail: ISO 20022 messages (pain.001 out, pacs.002 back) and a bank simulator."""
