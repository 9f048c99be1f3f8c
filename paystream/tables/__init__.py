"""paystream.tables."""
