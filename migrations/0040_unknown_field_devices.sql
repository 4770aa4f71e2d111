-- 0040 Which devices sent each unknown telemetry key, so that ListUnknownFields shows operators
-- and viewers only what their assigned devices sent (unknown_field_catalog is per client, and
-- its counts and examples come from every device of the client).
-- Ingest records a (device, key) pair once, with that device's first value and type: one row
-- per pair, written when the pair is first seen and never updated, so it costs nothing per
-- reading. Counts and last-seen times stay per client, in the catalogue. Keys sent before this
-- migration are recorded the next time a device sends them.

CREATE TABLE unknown_field_devices (
    client_id uuid NOT NULL,
    device_id uuid NOT NULL,
    field_name text NOT NULL CHECK (length(field_name) BETWEEN 1 AND 256),
    inferred_type text NOT NULL
        CHECK (inferred_type IN ('string', 'number', 'integer', 'boolean', 'object', 'array',
                                 'null', 'mixed')),
    first_seen_at timestamptz NOT NULL DEFAULT now(),
    example_value jsonb,
    PRIMARY KEY (device_id, field_name),
    -- The device's keys go with it, and cannot name a device of another tenant.
    FOREIGN KEY (device_id, client_id) REFERENCES devices (id, client_id) ON DELETE CASCADE
);
SELECT lifebox_enable_tenant_rls('unknown_field_devices');

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'lifebox_app') THEN
        GRANT SELECT ON public.unknown_field_devices TO lifebox_app;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'lifebox_ingest') THEN
        -- INSERT ... ON CONFLICT (device_id, field_name) DO NOTHING reads the conflict target:
        -- the key columns only, never a value or a tenant.
        GRANT INSERT ON public.unknown_field_devices TO lifebox_ingest;
        GRANT SELECT (device_id, field_name) ON public.unknown_field_devices TO lifebox_ingest;
    END IF;
END
$$;
