"""The Kafka seam: topics, the broker epoch, the publisher, fetch pacing, the embedded broker."""
