-- 0060 command lifecycle (issue 14): the command state machine enforced by the database, the
-- transactional outbox the dispatchers claim from, idempotency keys, and grant revocation that
-- keeps history.
--
-- * command_status_transitions is the lifecycle, as data: a status change of a command that is
--   not one of its rows is refused by a trigger, whoever writes it (API, dispatcher, ingest).
-- * Every status change must come with its command_executions row written in the same
--   transaction (a deferred constraint trigger checks it at COMMIT), so the trail is complete
--   by construction. command_executions.at is the insert's own clock, so a trail orders even
--   within one transaction; xact_id ties a row to the transaction that wrote it.
-- * command_outbox holds a delivery job while its command is pending or sent: SendCommand
--   inserts both in one transaction; the job is deleted by the same trigger that sees the
--   command delivered or final, so no process needs a DELETE privilege and no job outlives
--   its command's need for delivery. seq orders a device's jobs: only a device's oldest job
--   is ever published (one command in flight per device).
-- * NOTIFY: lifebox_command_outbox wakes dispatchers when jobs come or go;
--   lifebox_command_updates carries "client_id:execution_id" of every trail row to the
--   StreamCommandUpdates hub (delivered at COMMIT, so a stream never sees a rolled-back row).

CREATE TABLE command_status_transitions (
    from_status text NOT NULL,
    to_status text NOT NULL,
    meaning text NOT NULL,
    PRIMARY KEY (from_status, to_status)
);
SELECT lifebox_enable_global_rls('command_status_transitions');

-- Reference rows are written on the staff path (global RLS), for this statement's transaction.
SELECT set_config('lifebox.staff', 'on', true);
INSERT INTO command_status_transitions (from_status, to_status, meaning) VALUES
    ('pending', 'sent', 'the broker accepted the publish (PUBACK)'),
    ('pending', 'cancelled', 'cancelled before it was published'),
    ('pending', 'expired', 'its lifetime ended, or its device or tenant may not receive it'),
    -- A device may answer a publish whose PUBACK its dispatcher never got to record (a
    -- crash between the two): its word moves the command on from pending.
    ('pending', 'delivered', 'the device said received'),
    ('pending', 'acknowledged', 'the device said accepted'),
    ('pending', 'completed', 'the device said completed'),
    ('pending', 'failed', 'the device said rejected or failed'),
    ('sent', 'sent', 'published again with the same id (not delivered within its retry interval)'),
    ('sent', 'delivered', 'the device said received'),
    ('sent', 'acknowledged', 'the device said accepted'),
    ('sent', 'completed', 'the device said completed'),
    ('sent', 'failed', 'the device said rejected or failed'),
    ('sent', 'expired', 'no final word before it expired'),
    ('delivered', 'acknowledged', 'the device said accepted'),
    ('delivered', 'completed', 'the device said completed'),
    ('delivered', 'failed', 'the device said rejected or failed'),
    ('delivered', 'expired', 'no final word before it expired'),
    ('acknowledged', 'completed', 'the device said completed'),
    ('acknowledged', 'failed', 'the device said rejected or failed'),
    ('acknowledged', 'expired', 'no final word before it expired');
SELECT set_config('lifebox.staff', 'off', true);

ALTER TABLE command_executions
    ADD COLUMN xact_id xid8 NOT NULL DEFAULT pg_current_xact_id(),
    ALTER COLUMN at SET DEFAULT clock_timestamp();

-- Refuses what is not a defined transition (and a command born in any state but pending).
CREATE FUNCTION lifebox_command_transition_allowed() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public
    AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.status <> 'pending' THEN
            RAISE EXCEPTION 'a command starts pending, not %', NEW.status
                USING ERRCODE = 'check_violation';
        END IF;
    ELSIF NEW.status IS DISTINCT FROM OLD.status AND NOT EXISTS (
        SELECT 1 FROM command_status_transitions
        WHERE from_status = OLD.status AND to_status = NEW.status
    ) THEN
        RAISE EXCEPTION 'command %: % -> % is not a defined transition',
            NEW.id, OLD.status, NEW.status USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER command_transition_allowed
    BEFORE INSERT OR UPDATE OF status ON control_commands
    FOR EACH ROW EXECUTE FUNCTION lifebox_command_transition_allowed();

-- At COMMIT: each status a command took in this transaction has its trail row from it.
-- SECURITY DEFINER on the staff path so it sees the trail whoever commits (the ingest role
-- may insert trail rows but not read them).
CREATE FUNCTION lifebox_command_transition_audited() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public
    AS $$
DECLARE
    v_from text := CASE WHEN TG_OP = 'INSERT' THEN NULL ELSE OLD.status END;
    v_staff text := current_setting('lifebox.staff', true);
    v_found boolean;
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.status = OLD.status THEN
        RETURN NULL;
    END IF;
    -- A function SET clause may not name our placeholder setting on PostgreSQL 15, so the
    -- staff path is entered and left by hand (an error aborts the transaction anyway).
    PERFORM set_config('lifebox.staff', 'on', true);
    v_found := NOT EXISTS (SELECT 1 FROM control_commands WHERE id = NEW.id)  -- deleted since
        OR EXISTS (
            SELECT 1 FROM command_executions
            WHERE command_id = NEW.id AND from_status IS NOT DISTINCT FROM v_from
              AND to_status = NEW.status AND xact_id = pg_current_xact_id());
    PERFORM set_config('lifebox.staff', coalesce(v_staff, ''), true);
    IF NOT v_found THEN
        RAISE EXCEPTION 'command %: % -> % has no command_executions row in its transaction',
            NEW.id, coalesce(v_from, 'new'), NEW.status USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END
$$;
CREATE CONSTRAINT TRIGGER command_transition_audited
    AFTER INSERT OR UPDATE OF status ON control_commands
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION lifebox_command_transition_audited();

-- The expiry sweep's queue: every command without its final word yet.
CREATE INDEX control_commands_unfinished_idx ON control_commands (expires_at)
    WHERE status IN ('pending', 'sent', 'delivered', 'acknowledged');

-- The transactional outbox: one delivery job per command while it is pending or sent.
CREATE TABLE command_outbox (
    command_id uuid PRIMARY KEY,
    client_id uuid NOT NULL,
    device_id uuid NOT NULL,
    -- Sending order per device (SendCommand serialises a device's sends, so it is also the
    -- commit order).
    seq bigint GENERATED ALWAYS AS IDENTITY,
    -- Publishes so far (1 = the first; a republish after a crash counts too).
    attempts integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- When a dispatcher should next publish it; after the last retry, its expiry.
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (command_id, client_id) REFERENCES control_commands (id, client_id)
        ON DELETE CASCADE
);
CREATE INDEX command_outbox_device_idx ON command_outbox (device_id, seq);
CREATE INDEX command_outbox_due_idx ON command_outbox (next_attempt_at, seq);
CREATE INDEX command_outbox_client_idx ON command_outbox (client_id);
SELECT lifebox_enable_tenant_rls('command_outbox');

CREATE FUNCTION lifebox_command_outbox_release() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public
    AS $$
DECLARE
    v_staff text := current_setting('lifebox.staff', true);
BEGIN
    PERFORM set_config('lifebox.staff', 'on', true);
    DELETE FROM command_outbox WHERE command_id = NEW.id;
    PERFORM set_config('lifebox.staff', coalesce(v_staff, ''), true);
    RETURN NULL;
END
$$;
CREATE TRIGGER command_outbox_release
    AFTER UPDATE OF status ON control_commands
    FOR EACH ROW WHEN (NEW.status NOT IN ('pending', 'sent'))
    EXECUTE FUNCTION lifebox_command_outbox_release();

CREATE FUNCTION lifebox_command_outbox_notify() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    PERFORM pg_notify('lifebox_command_outbox', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER command_outbox_notify
    AFTER INSERT OR DELETE ON command_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION lifebox_command_outbox_notify();

CREATE FUNCTION lifebox_command_update_notify() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    PERFORM pg_notify('lifebox_command_updates', NEW.client_id::text || ':' || NEW.id::text);
    RETURN NULL;
END
$$;
CREATE TRIGGER command_update_notify
    AFTER INSERT ON command_executions
    FOR EACH ROW EXECUTE FUNCTION lifebox_command_update_notify();

-- The same idempotency key from the same requester within 24 h names the first command.
-- requester: 'user:<uuid>' or 'rule:<uuid>' (alarm reactions).
CREATE TABLE command_idempotency_keys (
    client_id uuid NOT NULL,
    requester text NOT NULL,
    key text NOT NULL CHECK (length(key) BETWEEN 1 AND 128),
    command_id uuid NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (client_id, requester, key),
    FOREIGN KEY (command_id, client_id) REFERENCES control_commands (id, client_id)
        ON DELETE CASCADE
);
CREATE INDEX command_idempotency_keys_command_idx ON command_idempotency_keys (command_id);
SELECT lifebox_enable_tenant_rls('command_idempotency_keys');

-- Grants keep their history: revoking sets revoked_at/revoked_by on the grant and everything
-- delegated from it; one live grant per (user, permission, device scope).
ALTER TABLE user_command_permissions
    ADD COLUMN revoked_at timestamptz,
    ADD COLUMN revoked_by uuid REFERENCES users (id) ON DELETE SET NULL,
    DROP CONSTRAINT user_command_permissions_key;
CREATE UNIQUE INDEX user_command_permissions_live_key
    ON user_command_permissions (user_id, command_permission, device_id) NULLS NOT DISTINCT
    WHERE revoked_at IS NULL;

-- High-risk command types may be limited to roles (NULL: every role that may send commands).
ALTER TABLE command_permissions ADD COLUMN allowed_roles text[];

INSERT INTO runtime_grants (grantee, privileges, relation, columns, why) VALUES
    ('lifebox_app', 'SELECT, INSERT, UPDATE', 'command_outbox', NULL,
     'SendCommand enqueues; dispatchers (in dev on this role) claim and reschedule'),
    ('lifebox_app', 'SELECT, INSERT, UPDATE', 'command_idempotency_keys', NULL,
     'a key older than 24 h is taken over by its next use'),
    ('lifebox_app', 'SELECT', 'command_status_transitions', NULL, 'reference'),
    ('lifebox_dispatch', 'SELECT, UPDATE', 'command_outbox', NULL,
     'claim a device''s oldest due job (FOR UPDATE SKIP LOCKED), reschedule it'),
    ('lifebox_dispatch', 'SELECT', 'control_commands',
     '{id,client_id,device_id,template_id,command_type,parameters,status,issued_at,sent_at,'
     'expires_at,retries,max_retries,error}',
     'what a command message carries and whether it is still in flight'),
    ('lifebox_dispatch', 'UPDATE', 'control_commands',
     '{status,sent_at,retries,error,updated_at}', 'sent, republished, expired'),
    ('lifebox_dispatch', 'INSERT', 'command_executions', NULL, 'the trail of its transitions'),
    ('lifebox_dispatch', 'SELECT', 'devices', '{id,client_id,serial,status}',
     'the topic; a disabled device receives nothing'),
    ('lifebox_dispatch', 'SELECT', 'clients', '{id,status}',
     'a suspended tenant''s devices receive nothing');
SELECT lifebox_apply_grants();
