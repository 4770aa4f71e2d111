-- 0046 the broker's own view of device identity (issue 13), one definition for every broker.
--
-- broker_device_credentials: the credentials a broker must accept, and nothing else: not
-- revoked, of a provisioned or active device (a provisioned one turns active with its first
-- reading) of an active client. LifeBox's reconciler renders mosquitto's password file from
-- it (store/device_credentials.py broker_entries), and a clustered broker that authenticates
-- against PostgreSQL itself (EMQX's authn/authz, deploy/emqx/lifebox-auth.hocon) reads the
-- same rows at every connect, so there is no sync step and no second copy of the rule.
--
-- The broker's database role, lifebox_broker, reads it only through
-- lifebox_broker_device(username), one indexed row per call. Not a plain view grant: a view
-- reads its tables under row-level security as its owner, and FORCE makes the owner see no
-- tenant without the staff setting, which a broker's query cannot set. The function is
-- SECURITY DEFINER, takes the staff path for its one statement, takes the one username
-- being checked, and returns
-- only what a broker verifies with: EMQX's pbkdf2 compares the lowercase hex of
-- PBKDF2(mac, password, salt, iterations, dk_length), so the digest (stored in base64 for
-- mosquitto's `$7$`) is given in hex, beside the salt text and the iteration count. It holds
-- no other table, column or function: no secret, no tenant's other data.
--
-- The role is made by a superuser (deploy/emqx/init-broker-role.sh; no role of ours may
-- create roles). A role missing now is reported and skipped; lifebox_grant_broker() grants
-- it once it exists (the script calls it), and is safe to re-run.

CREATE VIEW broker_device_credentials WITH (security_barrier) AS
SELECT c.username, c.device_id, c.client_id, c.password_hash, c.hash_iterations, c.hash_salt,
       c.hash_digest
FROM device_credentials c
JOIN devices d ON d.id = c.device_id AND d.client_id = c.client_id
JOIN clients k ON k.id = c.client_id
WHERE c.revoked_at IS NULL AND d.status IN ('provisioned', 'active') AND k.status = 'active';
COMMENT ON VIEW broker_device_credentials IS
    'Credentials the broker accepts (live, of a provisioned/active device of an active client).';

CREATE FUNCTION lifebox_broker_device(p_username text)
    RETURNS TABLE (username text, password_hash text, salt text, iterations integer)
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = pg_catalog, public
    AS $$
DECLARE
    -- The staff path for this one statement, then the caller's setting again. (A SET clause
    -- on the function would say this in one line, but PostgreSQL 15 lets only a superuser
    -- attach a custom setting to a function.)
    v_staff text := current_setting('lifebox.staff', true);
BEGIN
    PERFORM set_config('lifebox.staff', 'on', true);
    RETURN QUERY
        SELECT v.username, encode(decode(v.hash_digest, 'base64'), 'hex'), v.hash_salt,
               v.hash_iterations
        FROM public.broker_device_credentials v
        WHERE v.username = p_username;
    PERFORM set_config('lifebox.staff', coalesce(v_staff, ''), true);
END
$$;
COMMENT ON FUNCTION lifebox_broker_device(text) IS
    'The live credential of one broker username, for the broker''s own database authn/authz.';
REVOKE ALL ON FUNCTION lifebox_broker_device(text) FROM PUBLIC;

CREATE FUNCTION lifebox_grant_broker() RETURNS text
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'lifebox_broker') THEN
        RAISE WARNING 'role lifebox_broker does not exist: no grants made for it';
        RETURN 'granted: nobody';
    END IF;
    GRANT USAGE ON SCHEMA public TO lifebox_broker;
    GRANT EXECUTE ON FUNCTION public.lifebox_broker_device(text) TO lifebox_broker;
    RETURN 'granted: lifebox_broker';
END
$$;
REVOKE ALL ON FUNCTION lifebox_grant_broker() FROM PUBLIC;

SELECT lifebox_grant_broker();
