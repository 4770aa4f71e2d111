-- 0009 ingest rejects: every reading the ingest path could not accept, with its reason and
-- (capped) raw bytes, so an operator can see why a device's data is missing. A reject for an
-- unknown serial has no client and is visible on the staff path only.
-- Rows older than the telemetry retention are pruned by partition maintenance.

CREATE TABLE ingest_rejects (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- A tenant's rejects go with the tenant.
    client_id uuid REFERENCES clients (id) ON DELETE CASCADE,
    serial text NOT NULL,
    topic text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    -- Stable machine-readable reason (bad_json, type_error, ts_out_of_range, unknown_device,
    -- device_disabled, too_large, ...); reason is the human-readable detail.
    code text NOT NULL CHECK (code ~ '^[a-z][a-z0-9_]{1,63}$'),
    reason text NOT NULL,
    -- The ingest caps what it keeps (ingest_reject_raw_cap); this is the hard ceiling.
    raw bytea NOT NULL CHECK (octet_length(raw) <= 65536),
    raw_truncated boolean NOT NULL DEFAULT false,
    -- Which reading of which message: index in a JSON array (NULL: the whole message).
    message_index integer,
    reading_index integer CHECK (reading_index IS NULL OR reading_index >= 0)
);
CREATE INDEX ingest_rejects_client_idx ON ingest_rejects (client_id, received_at DESC);
CREATE INDEX ingest_rejects_serial_idx ON ingest_rejects (serial, received_at DESC);
CREATE INDEX ingest_rejects_received_idx ON ingest_rejects (received_at);
SELECT lifebox_enable_tenant_rls('ingest_rejects');
