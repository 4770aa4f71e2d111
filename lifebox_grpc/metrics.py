"""Every Prometheus metric LifeBox exports, declared once.

The default registry already carries the process collector (CPU, memory, open fds).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

GRPC_REQUESTS = Counter(
    "lifebox_grpc_requests_total", "gRPC calls handled", ["service", "method", "code"]
)
GRPC_LATENCY = Histogram(
    "lifebox_grpc_request_seconds",
    "gRPC call latency",
    ["service", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
DB_UP = Gauge("lifebox_database_up", "1 while the database answers the health probe")

INGEST_MESSAGES = Counter(
    "lifebox_ingest_messages_total", "MQTT messages received by ingest", ["kind"]
)
INGEST_ROWS = Counter("lifebox_ingest_rows_total", "Telemetry rows committed")
INGEST_POINTS = Counter(
    "lifebox_ingest_points_total", "Calculated data points committed with their readings"
)
INGEST_POINTS_SKIPPED = Counter(
    "lifebox_ingest_points_skipped_total",
    "Formula values on committed readings that became no point, by reason (missing_field, "
    "non_finite: division by zero included, not_a_number, error, over_budget)",
    ["reason"],
)
INGEST_REJECTS = Counter(
    "lifebox_ingest_rejects_total", "Readings or messages rejected, by reason", ["reason"]
)
INGEST_REJECTS_NOT_STORED = Counter(
    "lifebox_ingest_rejects_not_stored_total",
    "Rejects of messages naming no device past the worker's cap: counted (also in "
    "lifebox_ingest_rejects_total) and summed up in one suppressed_rejects row per interval",
    ["reason"],
)
INGEST_DB_RETRIES = Counter(
    "lifebox_ingest_db_retries_total", "Batches waiting for the database, by error", ["error"]
)
INGEST_QOS0_DROPPED = Counter(
    "lifebox_ingest_qos0_dropped_total", "QoS 0 messages dropped because the batch was full"
)
INGEST_BATCHES = Counter("lifebox_ingest_batches_total", "Batches committed", ["path"])
INGEST_BATCH_SECONDS = Histogram(
    "lifebox_ingest_batch_seconds",
    "Time from batch flush to commit",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
INGEST_LATENCY = Histogram(
    "lifebox_ingest_publish_to_commit_seconds",
    "From a reading's ts to the commit of its row",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
INGEST_INFLIGHT = Gauge("lifebox_ingest_inflight_messages", "Received, not yet acknowledged")
MQTT_CONNECTED = Gauge("lifebox_mqtt_connected", "1 while connected to the broker")
MQTT_SUBSCRIBED = Gauge(
    "lifebox_mqtt_subscribed", "1 once the broker acknowledged our subscriptions"
)
INGEST_ROWS_PER_SECOND = Gauge(
    "lifebox_ingest_rows_per_second", "Committed rows per second over the last 10 s"
)
INGEST_LATENCY_P50 = Gauge(
    "lifebox_ingest_latency_p50_seconds", "Median publish-to-commit latency, last 10 s"
)
INGEST_LATENCY_P99 = Gauge(
    "lifebox_ingest_latency_p99_seconds", "99th percentile publish-to-commit latency, last 10 s"
)
BROKER_DROPPED = Gauge(
    "lifebox_broker_dropped_messages",
    "Messages the broker acknowledged to their publisher and then dropped (a full session "
    "queue), since the broker started, as its $SYS count says; every ingest worker reports "
    "the same broker-wide figure (take the max)",
)

# --- broker reconciler (issue 13) ---
BROKER_SYNC_LEASE = Gauge(
    "lifebox_broker_sync_lease_held", "1 while this broker-sync copy holds the lease"
)
BROKER_SYNC_PASSES = Counter(
    "lifebox_broker_sync_passes_total",
    "Reconciliation passes, by what started them (start, notify, periodic, broker_restart)",
    ["trigger"],
)
BROKER_SYNC_RELOADS = Counter(
    "lifebox_broker_sync_reloads_total", "Passes that changed a file and signalled the broker"
)
BROKER_SYNC_ERRORS = Counter(
    "lifebox_broker_sync_errors_total", "Passes or lease attempts that failed, by error", ["error"]
)
BROKER_SYNC_DEVICES = Gauge(
    "lifebox_broker_sync_device_entries", "Device credentials in the broker's password file"
)
BROKER_SYNC_RESERVED = Gauge(
    "lifebox_broker_sync_reserved_skipped",
    "Device credentials left out because their username is a service account's",
)
BROKER_SYNC_LAST_PASS = Gauge(
    "lifebox_broker_sync_last_pass_timestamp_seconds", "When the last successful pass ended"
)

# --- billing (issue 16) ---
FAWRY_NOTIFICATIONS = Counter(
    "lifebox_fawry_notifications_total",
    "Fawry payment notifications received, by outcome (credited, duplicate, bad_signature, "
    "malformed, too_large, amount_mismatch, unknown_merchant_ref, unconfirmed, ...)",
    ["outcome"],
)
# --- end billing (issue 16) ---
