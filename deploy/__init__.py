"""The local runtime and operations: Kafka without Docker, topics, the hookstream CLI."""
