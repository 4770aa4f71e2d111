-- 0045 reserved serials (issue 13): a device's serial is its broker username, so it must never
-- be a broker service account's name. Every service account starts with `lifebox-`
-- (lifebox-ingest, lifebox-serve, lifebox-health, lifebox-broker-admin, and any added later),
-- so no serial may start with it, in any letter case. The same rule is
-- lifebox_grpc/serials.py `is_valid_serial` (the API and ingest's topic check).
--
-- A device registered earlier with such a serial could never get a working credential (the
-- broker would take it for the service account) and ingest now refuses its topics as
-- `invalid_serial`. Rather than fail the migration on tenant data, each one is renamed to
-- `renamed-<its id, 32 hex digits>` (unique, valid), the change is recorded in its history
-- (path `serial`, old and new value, by nobody: the platform), and any live credential of it
-- is revoked (its username was the reserved name). Nothing else about the device changes; its
-- owner re-provisions it under the new serial or registers a new one. Then the CHECK holds
-- for every row.

SET LOCAL lock_timeout = '30s';
SELECT set_config('lifebox.staff', 'on', true);  -- every tenant's devices

WITH renamed AS (
    UPDATE devices d SET serial = 'renamed-' || replace(d.id::text, '-', '')
    FROM devices old
    WHERE old.id = d.id AND d.serial ~* '^lifebox-'
    RETURNING d.id, d.client_id, old.serial AS old_serial, d.serial AS new_serial
), history AS (
    INSERT INTO device_metadata_history (client_id, device_id, changed_by, path, old_value,
                                         new_value)
    SELECT client_id, id, NULL, 'serial', to_jsonb(old_serial), to_jsonb(new_serial)
    FROM renamed
)
UPDATE device_credentials c SET revoked_at = now()
FROM renamed r
WHERE c.device_id = r.id AND c.revoked_at IS NULL;

SELECT set_config('lifebox.staff', '', true);

ALTER TABLE devices ADD CONSTRAINT devices_serial_not_reserved
    CHECK (serial !~* '^lifebox-');
