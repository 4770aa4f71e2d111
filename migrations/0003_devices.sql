-- 0003 devices: the device registry and what hangs off a device.
--
-- Child tables reference devices by (id, client_id), not id alone: the database, not just the
-- store code, guarantees that a row's client_id (which row-level security trusts) is the
-- client of its device. Devices do not move between tenants.
-- device_locations is a time series: see lifebox_time_series_clause() and 0010.

CREATE TABLE devices (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- Deleting a tenant deletes its devices (and, through them, their data).
    client_id uuid NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    -- Unique platform-wide: the MQTT topic lifebox/v1/{serial}/... names the device, so a
    -- serial must be a single topic level (no '/', '+', '#').
    serial text NOT NULL UNIQUE CHECK (serial ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$'),
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    device_type text NOT NULL DEFAULT 'generic',
    model text,
    firmware_version text,
    status text NOT NULL DEFAULT 'provisioned'
        CHECK (status IN ('provisioned', 'active', 'disabled', 'decommissioned')),
    -- How often the device reports; online status is "seen within a few intervals".
    expected_interval_s integer NOT NULL DEFAULT 60 CHECK (expected_interval_s > 0),
    last_seen_at timestamptz,
    metadata jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    decommissioned_at timestamptz,
    CONSTRAINT devices_id_client_key UNIQUE (id, client_id)
);
CREATE INDEX devices_client_status_idx ON devices (client_id, status);
CREATE INDEX devices_client_type_idx ON devices (client_id, device_type);
CREATE INDEX devices_last_seen_idx ON devices (client_id, last_seen_at);
SELECT lifebox_enable_tenant_rls('devices');
SELECT lifebox_track_updates('devices');

CREATE TABLE device_metadata_history (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    client_id uuid NOT NULL,
    device_id uuid NOT NULL,
    -- The change record outlives the user who made it.
    changed_by uuid REFERENCES users (id) ON DELETE SET NULL,
    path text NOT NULL,
    old_value jsonb,
    new_value jsonb,
    changed_at timestamptz NOT NULL DEFAULT now(),
    -- History belongs to the device: it goes when the device is purged.
    FOREIGN KEY (device_id, client_id) REFERENCES devices (id, client_id) ON DELETE CASCADE
);
CREATE INDEX device_metadata_history_device_idx
    ON device_metadata_history (device_id, changed_at DESC);
CREATE INDEX device_metadata_history_client_idx ON device_metadata_history (client_id);
SELECT lifebox_enable_tenant_rls('device_metadata_history');

CREATE TABLE device_metadata_snapshots (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    client_id uuid NOT NULL,
    device_id uuid NOT NULL,
    taken_by uuid REFERENCES users (id) ON DELETE SET NULL,
    reason text NOT NULL,
    metadata jsonb NOT NULL,
    firmware_version text,
    taken_at timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (device_id, client_id) REFERENCES devices (id, client_id) ON DELETE CASCADE
);
CREATE INDEX device_metadata_snapshots_device_idx
    ON device_metadata_snapshots (device_id, taken_at DESC);
CREATE INDEX device_metadata_snapshots_client_idx ON device_metadata_snapshots (client_id);
SELECT lifebox_enable_tenant_rls('device_metadata_snapshots');

CREATE TABLE user_device_assignments (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    client_id uuid NOT NULL,
    user_id uuid NOT NULL,
    device_id uuid NOT NULL,
    access_level text NOT NULL DEFAULT 'view' CHECK (access_level IN ('view', 'operate', 'manage')),
    assigned_by uuid REFERENCES users (id) ON DELETE SET NULL,
    assigned_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, device_id),
    -- An assignment means nothing once either side is gone. Composite keys also forbid
    -- assigning a user of one tenant to a device of another.
    FOREIGN KEY (user_id, client_id) REFERENCES users (id, client_id) ON DELETE CASCADE,
    FOREIGN KEY (device_id, client_id) REFERENCES devices (id, client_id) ON DELETE CASCADE
);
CREATE INDEX user_device_assignments_device_idx ON user_device_assignments (device_id);
CREATE INDEX user_device_assignments_client_idx ON user_device_assignments (client_id);
SELECT lifebox_enable_tenant_rls('user_device_assignments');

CREATE TABLE device_alarms (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    client_id uuid NOT NULL,
    device_id uuid NOT NULL,
    code text NOT NULL CHECK (length(code) BETWEEN 1 AND 128),
    severity text NOT NULL DEFAULT 'warning'
        CHECK (severity IN ('info', 'warning', 'minor', 'major', 'critical')),
    message text,
    raised_at timestamptz NOT NULL,
    cleared_at timestamptz,
    payload jsonb,
    received_at timestamptz NOT NULL DEFAULT now(),
    CHECK (cleared_at IS NULL OR cleared_at >= raised_at),
    FOREIGN KEY (device_id, client_id) REFERENCES devices (id, client_id) ON DELETE CASCADE
);
CREATE INDEX device_alarms_device_idx ON device_alarms (device_id, raised_at DESC);
CREATE INDEX device_alarms_open_idx ON device_alarms (client_id, raised_at DESC)
    WHERE cleared_at IS NULL;
SELECT lifebox_enable_tenant_rls('device_alarms');

DO $$
BEGIN
    EXECUTE format($ddl$
        CREATE TABLE device_locations (
            time timestamptz NOT NULL,
            device_id uuid NOT NULL,
            client_id uuid NOT NULL,
            latitude double precision NOT NULL CHECK (latitude BETWEEN -90 AND 90),
            longitude double precision NOT NULL CHECK (longitude BETWEEN -180 AND 180),
            altitude_m double precision,
            accuracy_m double precision CHECK (accuracy_m >= 0),
            source text NOT NULL DEFAULT 'telemetry'
                CHECK (source IN ('gps', 'network', 'manual', 'telemetry')),
            PRIMARY KEY (device_id, time),
            -- A location trail belongs to its device.
            FOREIGN KEY (device_id, client_id) REFERENCES devices (id, client_id)
                ON DELETE CASCADE
        ) %s
    $ddl$, lifebox_time_series_clause());
END
$$;
CREATE INDEX device_locations_client_time_idx ON device_locations (client_id, time DESC);
SELECT lifebox_enable_tenant_rls('device_locations');
