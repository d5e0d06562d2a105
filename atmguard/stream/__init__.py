"""The stream around the engine: broker, topics, publishing, the embedded stack (`atmguard up`)."""
