"""paystream: moves money on Kafka."""
