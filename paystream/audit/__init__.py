"""paystream.audit."""
