-- 0050 the broker reconciler (issue 13): what tells `lifebox broker-sync` to rewrite the
-- broker's password and ACL files, and the only rows its own role may read.
--
-- A change that can add or remove a broker entry sends NOTIFY lifebox_broker (payload: the
-- table) when its transaction commits: a credential created, rotated, revoked or deleted; a
-- device's status or serial changed, or the device deleted (its credentials go with it); a
-- client's status changed. Device and client triggers are per row but fire only when the
-- column really changed (ingest's last-seen updates set status on every batch of a device
-- and must not wake the reconciler); PostgreSQL folds equal notifications of one
-- transaction into one, so a bulk change is one wake-up. The reconciler debounces and also
-- runs a full pass on a timer, so a lost notification costs at most that interval.
--
-- lifebox_broker_sync (made by the bootstrap or deploy/postgres/init-lifebox.sh; no BYPASSRLS;
-- not lifebox_broker, which is a clustered broker's own role, 0046) may SELECT the two
-- columns broker_entries() reads from 0046's view, on the staff path, and nothing else: no
-- table, no secret but the hashes the broker gets anyway, no write anywhere.

CREATE OR REPLACE FUNCTION lifebox_notify_broker() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    PERFORM pg_notify('lifebox_broker_sync', TG_TABLE_NAME);
    RETURN NULL;
END
$$;

CREATE TRIGGER device_credentials_notify_broker
    AFTER INSERT OR UPDATE OR DELETE ON device_credentials
    FOR EACH STATEMENT EXECUTE FUNCTION lifebox_notify_broker();
CREATE TRIGGER devices_notify_broker
    AFTER UPDATE OF status, serial ON devices
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status
                       OR OLD.serial IS DISTINCT FROM NEW.serial)
    EXECUTE FUNCTION lifebox_notify_broker();
CREATE TRIGGER devices_notify_broker_delete
    AFTER DELETE ON devices
    FOR EACH STATEMENT EXECUTE FUNCTION lifebox_notify_broker();
CREATE TRIGGER clients_notify_broker
    AFTER UPDATE OF status ON clients
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION lifebox_notify_broker();

INSERT INTO runtime_grants (grantee, privileges, relation, columns, why) VALUES
    ('lifebox_broker_sync', 'SELECT', 'broker_device_credentials', '{username,password_hash}',
     'the broker''s password file: the live credentials (0046''s one rule) and their hashes');
SELECT lifebox_apply_grants();
