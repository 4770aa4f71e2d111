-- 0033 The latest location of each device, kept beside its trail.
-- device_locations is partitioned by day (or a hypertable): "the newest row of a device"
-- probes every partition's index, about 100 of them at 90 days' retention, on every
-- GetDevice and ListDevices row. One row per device, moved forward by a trigger on every
-- insert into the trail (whoever inserts), makes it one index lookup.

CREATE TABLE device_latest_locations (
    device_id uuid PRIMARY KEY,
    client_id uuid NOT NULL,
    time timestamptz NOT NULL,
    latitude double precision NOT NULL,
    longitude double precision NOT NULL,
    altitude_m double precision,
    accuracy_m double precision,
    source text NOT NULL,
    FOREIGN KEY (device_id, client_id) REFERENCES devices (id, client_id) ON DELETE CASCADE
);
SELECT lifebox_enable_tenant_rls('device_latest_locations');

CREATE FUNCTION lifebox_track_latest_location() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    INSERT INTO device_latest_locations AS l
        (device_id, client_id, time, latitude, longitude, altitude_m, accuracy_m, source)
    VALUES (NEW.device_id, NEW.client_id, NEW.time, NEW.latitude, NEW.longitude,
            NEW.altitude_m, NEW.accuracy_m, NEW.source)
    ON CONFLICT (device_id) DO UPDATE SET
        time = EXCLUDED.time, latitude = EXCLUDED.latitude, longitude = EXCLUDED.longitude,
        altitude_m = EXCLUDED.altitude_m, accuracy_m = EXCLUDED.accuracy_m,
        source = EXCLUDED.source
    WHERE l.time < EXCLUDED.time;
    RETURN NULL;
END
$$;

-- On a partitioned table (PostgreSQL 13+) and on a hypertable the row trigger reaches every
-- partition or chunk, present and future.
CREATE TRIGGER device_locations_track_latest
    AFTER INSERT ON device_locations
    FOR EACH ROW EXECUTE FUNCTION lifebox_track_latest_location();

-- Existing trails (row-level security is forced on the owner too: act as staff here).
SELECT set_config('lifebox.staff', 'on', true);
INSERT INTO device_latest_locations
    (device_id, client_id, time, latitude, longitude, altitude_m, accuracy_m, source)
SELECT DISTINCT ON (device_id) device_id, client_id, time, latitude, longitude, altitude_m,
       accuracy_m, source
FROM device_locations
ORDER BY device_id, time DESC;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'lifebox_app') THEN
        -- Written only through the trigger, as the role that inserts the location.
        GRANT SELECT, INSERT, UPDATE ON device_latest_locations TO lifebox_app;
    END IF;
END
$$;
