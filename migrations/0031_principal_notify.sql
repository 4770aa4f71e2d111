-- 0031 principal cache support: `serve` keeps each caller's principal (user, role,
-- permissions, assigned devices, client status) for a few seconds, and must hear at once when
-- anything it holds changes, so that a disabled or deleted user, a changed password or role, a
-- removed assignment or a suspended client stops working immediately.
-- Payload: the user id whose entry is stale; '' means "drop every entry".

CREATE FUNCTION lifebox_notify_principal_change() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
    BEGIN
        IF TG_TABLE_NAME = 'users' THEN
            PERFORM pg_notify('lifebox_principals', OLD.id::text);
        ELSIF TG_TABLE_NAME = 'user_device_assignments' THEN
            IF TG_OP IN ('UPDATE', 'DELETE') THEN
                PERFORM pg_notify('lifebox_principals', OLD.user_id::text);
            END IF;
            IF TG_OP IN ('INSERT', 'UPDATE') THEN
                PERFORM pg_notify('lifebox_principals', NEW.user_id::text);
            END IF;
        ELSE
            -- A role's permissions or a client's status: many users at once, and rare.
            PERFORM pg_notify('lifebox_principals', '');
        END IF;
        RETURN NULL;
    END
    $$;

-- Only columns a principal is made of: a login (last_login_at, failure counts) notifies nothing.
CREATE TRIGGER users_notify_principal
    AFTER UPDATE OF client_id, email, role, status, password_hash, password_changed_at
    OR DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION lifebox_notify_principal_change();

CREATE TRIGGER user_device_assignments_notify_principal
    AFTER INSERT OR UPDATE OR DELETE ON user_device_assignments
    FOR EACH ROW EXECUTE FUNCTION lifebox_notify_principal_change();

CREATE TRIGGER role_permissions_notify_principal
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON role_permissions
    FOR EACH STATEMENT EXECUTE FUNCTION lifebox_notify_principal_change();

CREATE TRIGGER clients_notify_principal
    AFTER UPDATE OF status OR DELETE ON clients
    FOR EACH ROW EXECUTE FUNCTION lifebox_notify_principal_change();
