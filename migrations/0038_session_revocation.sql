-- 0038 an access token dies with its session: once a session family (a login and its refresh
-- rotations) is logged out, revoked for refresh-token reuse, or ended by a password change or
-- reset, its access tokens are refused on the next call, not when they expire.
--
-- `serve` reads a user's live families (each family's newest refresh token, unrevoked and
-- unexpired) with the rest of the principal (store/users.py) and caches it; the cache must
-- hear at once when a family ends, on every replica. A revocation (or a deletion) of a
-- refresh token therefore notifies `lifebox_principals` with its user id, as the changes of
-- 0031 do. Rotation and new sign-ins notify nothing: a family the cached record does not
-- list is read from the database.
--
-- Login no longer locks an account for everyone (issue 12: lockout is per e-mail and client
-- address, in auth_rate_limits); the per-account lock columns of `users` are cleared so that
-- no lock from before lingers in what the API shows.

CREATE FUNCTION lifebox_notify_session_change() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
    BEGIN
        PERFORM pg_notify('lifebox_principals', OLD.user_id::text);
        RETURN NULL;
    END
    $$;

CREATE TRIGGER refresh_tokens_notify_revoked
    AFTER UPDATE OF revoked_at ON refresh_tokens
    FOR EACH ROW WHEN (OLD.revoked_at IS DISTINCT FROM NEW.revoked_at)
    EXECUTE FUNCTION lifebox_notify_session_change();

CREATE TRIGGER refresh_tokens_notify_deleted
    AFTER DELETE ON refresh_tokens
    FOR EACH ROW EXECUTE FUNCTION lifebox_notify_session_change();

-- The principal load's read of live families: one entry per live session.
CREATE INDEX refresh_tokens_live_idx ON refresh_tokens (user_id) INCLUDE (family_id, expires_at)
    WHERE revoked_at IS NULL AND replaced_by IS NULL;

SELECT set_config('lifebox.staff', 'on', true);
UPDATE users SET failed_login_count = 0, locked_until = NULL
WHERE failed_login_count <> 0 OR locked_until IS NOT NULL;
SELECT set_config('lifebox.staff', '', true);
