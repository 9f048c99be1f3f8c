"""paystream.analytics."""
