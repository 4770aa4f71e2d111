"""One module per gRPC service: validation and mapping, no SQL."""
