-- 0032 ingest hardening (from review):
-- * The device-change NOTIFY fired on every last-seen update (UPDATE OF status fires whenever
--   status is a SET target, changed or not), emptying the ingest cache for every active
--   device twice a second. It now fires only when status, serial or tenant really change.
-- * A redelivered alarm (same device, code and time) is the same alarm: unique, so ingest
--   can insert it with ON CONFLICT DO NOTHING.
-- * The ingest role (BYPASSRLS) reads only the control_commands columns that acks need,
--   not every tenant's command parameters.

DROP TRIGGER devices_notify_ingest ON devices;

CREATE TRIGGER devices_notify_ingest
    AFTER UPDATE OF status, serial, client_id ON devices
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status
          OR OLD.serial IS DISTINCT FROM NEW.serial
          OR OLD.client_id IS DISTINCT FROM NEW.client_id)
    EXECUTE FUNCTION lifebox_notify_device_change();

CREATE TRIGGER devices_notify_ingest_delete
    AFTER DELETE ON devices
    FOR EACH ROW EXECUTE FUNCTION lifebox_notify_device_change();

CREATE UNIQUE INDEX device_alarms_device_code_raised_key
    ON device_alarms (device_id, code, raised_at);

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'lifebox_ingest') THEN
        -- ON CONFLICT (cols) needs SELECT on the conflict columns.
        GRANT SELECT (device_id, code, raised_at) ON device_alarms TO lifebox_ingest;
        REVOKE SELECT ON control_commands FROM lifebox_ingest;
        GRANT SELECT (id, client_id, device_id, status, delivered_at, completed_at, result)
            ON control_commands TO lifebox_ingest;
    END IF;
END
$$;
