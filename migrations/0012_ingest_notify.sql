-- 0012 ingest support: ingest workers cache serial -> device and must hear when that mapping
-- or a device's right to publish changes (status, serial, tenant, or the tenant's status).

CREATE FUNCTION lifebox_notify_device_change() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
    BEGIN
        -- Payload: the serial whose cache entry is stale; '' means "drop everything".
        IF TG_TABLE_NAME = 'clients' THEN
            PERFORM pg_notify('lifebox_devices', '');
        ELSE
            PERFORM pg_notify('lifebox_devices', OLD.serial);
        END IF;
        RETURN NULL;
    END
    $$;

CREATE TRIGGER devices_notify_ingest
    AFTER UPDATE OF status, serial, client_id OR DELETE ON devices
    FOR EACH ROW EXECUTE FUNCTION lifebox_notify_device_change();

CREATE TRIGGER clients_notify_ingest
    AFTER UPDATE OF status ON clients
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION lifebox_notify_device_change();
