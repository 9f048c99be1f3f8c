"""paystream.agents."""
