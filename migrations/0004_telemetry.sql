-- 0004 telemetry: readings, the catalogue of unknown fields, processed data points.
--
-- telemetry_events' column order is a contract with the Rust binary COPY encoder
-- (ingest_native): time, device_id, client_id, the 37 known fields in ARCHITECTURE.md order,
-- extra. Change it only together with the encoder. (device_id, time) is the identity of a
-- reading: a redelivered message is the same reading. The primary key includes the time
-- column, as both native partitioning and TimescaleDB require.

DO $$
BEGIN
    EXECUTE format($ddl$
        CREATE TABLE telemetry_events (
            time timestamptz NOT NULL,
            device_id uuid NOT NULL,
            client_id uuid NOT NULL,
            voltage_l1 double precision,
            voltage_l2 double precision,
            voltage_l3 double precision,
            current_l1 double precision,
            current_l2 double precision,
            current_l3 double precision,
            active_power_w double precision,
            reactive_power_var double precision,
            apparent_power_va double precision,
            power_factor double precision,
            frequency_hz double precision,
            energy_import_kwh double precision,
            energy_export_kwh double precision,
            temperature_c double precision,
            humidity_pct double precision,
            pressure_hpa double precision,
            battery_v double precision,
            battery_pct double precision,
            rssi_dbm double precision,
            snr_db double precision,
            latitude double precision,
            longitude double precision,
            altitude_m double precision,
            co2_ppm double precision,
            pm25_ugm3 double precision,
            uptime_s bigint,
            packet_seq bigint,
            tx_bytes bigint,
            rx_bytes bigint,
            error_count bigint,
            reboot_count bigint,
            relay_on boolean,
            door_open boolean,
            tamper_alarm boolean,
            low_battery boolean,
            firmware_version text,
            status text,
            extra jsonb,
            CONSTRAINT telemetry_events_pkey PRIMARY KEY (device_id, time),
            -- Readings belong to their device; purging a device purges them (devices are
            -- normally decommissioned, which keeps them until retention drops them).
            CONSTRAINT telemetry_events_device_fkey FOREIGN KEY (device_id, client_id)
                REFERENCES devices (id, client_id) ON DELETE CASCADE
        ) %s
    $ddl$, lifebox_time_series_clause());
END
$$;
-- Tenant-wide time windows ("all my devices, last hour"); per-device reads use the key.
CREATE INDEX telemetry_events_client_time_idx ON telemetry_events (client_id, time DESC);
SELECT lifebox_enable_tenant_rls('telemetry_events');

CREATE TABLE unknown_field_catalog (
    -- The catalogue is per tenant and goes with it.
    client_id uuid NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    field_name text NOT NULL CHECK (length(field_name) BETWEEN 1 AND 256),
    inferred_type text NOT NULL
        CHECK (inferred_type IN ('string', 'number', 'integer', 'boolean', 'object', 'array',
                                 'null', 'mixed')),
    first_seen_at timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    seen_count bigint NOT NULL DEFAULT 1 CHECK (seen_count >= 0),
    example_value jsonb,
    PRIMARY KEY (client_id, field_name)
);
SELECT lifebox_enable_tenant_rls('unknown_field_catalog');

DO $$
BEGIN
    EXECUTE format($ddl$
        CREATE TABLE device_data_points (
            time timestamptz NOT NULL,
            device_id uuid NOT NULL,
            client_id uuid NOT NULL,
            metric text NOT NULL CHECK (length(metric) BETWEEN 1 AND 128),
            value double precision NOT NULL,
            unit text,
            -- The formula that produced the value (FK added in 0008 with the formulas).
            formula_id uuid,
            PRIMARY KEY (device_id, metric, time),
            FOREIGN KEY (device_id, client_id) REFERENCES devices (id, client_id)
                ON DELETE CASCADE
        ) %s
    $ddl$, lifebox_time_series_clause());
END
$$;
CREATE INDEX device_data_points_client_time_idx
    ON device_data_points (client_id, metric, time DESC);
SELECT lifebox_enable_tenant_rls('device_data_points');
