"""MQTT ingest: consumer, batcher, COPY writer, acknowledgements, post-commit hooks."""
