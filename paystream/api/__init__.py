"""paystream.api."""
