"""Prometheus metrics of the stream engine (served with the others by ``/metrics``)."""

from __future__ import annotations

from prometheus_client import Counter

STREAM_OVERFLOWS = Counter(
    "lifebox_stream_overflows_total",
    "Streams ended with RESOURCE_EXHAUSTED because their client read slower than they "
    "produced (their buffer was full)",
    ["stream"],
)
LISTENER_LOSSES = Counter(
    "lifebox_stream_listener_losses_total",
    "LISTEN connections lost (not released on purpose); streams resynchronised by time",
)
COMMIT_READS = Counter(
    "lifebox_stream_commit_reads_total",
    "Statements reading announced telemetry commits, once per process for every stream",
)
ROWS_READ = Counter(
    "lifebox_stream_rows_read_total", "Telemetry rows read for live streams (once per process)"
)
