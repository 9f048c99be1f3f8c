"""paystream.topology."""
