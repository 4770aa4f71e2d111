-- 0002 clients and authentication: the tenant itself, roles and their permissions, users
-- and the two token tables.
--
-- A user's client_id is NULL exactly for platform staff (super_user, admin); every other
-- role belongs to one client. Tokens are stored as hashes only, so a database read never
-- yields a usable token. Token rows carry the user's client_id so row-level security scopes
-- them like the user; the pre-authentication lookups (login by e-mail, refresh and reset by
-- token hash) happen before any tenant is known and go through the three lifebox_auth_*
-- functions below, each an explicit, named use of the staff path.

CREATE TABLE clients (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    slug text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9-]{1,62}$'),
    status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended', 'closed')),
    billing_mode text NOT NULL DEFAULT 'prepaid' CHECK (billing_mode IN ('prepaid', 'postpaid')),
    currency char(3) NOT NULL DEFAULT 'EGP' CHECK (currency ~ '^[A-Z]{3}$'),
    balance numeric(20, 4) NOT NULL DEFAULT 0,
    credit_limit numeric(20, 4) NOT NULL DEFAULT 0 CHECK (credit_limit >= 0),
    contact_email text,
    settings jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(settings) = 'object'),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE clients IS 'Tenants. Suspended, not deleted, in normal operation.';
-- The clients row is its own tenant: a tenant sees only itself.
SELECT lifebox_enable_tenant_rls('clients', 'id');
SELECT lifebox_track_updates('clients');

CREATE TABLE roles (
    name text PRIMARY KEY CHECK (name ~ '^[a-z_]{2,32}$'),
    description text NOT NULL,
    is_platform_staff boolean NOT NULL DEFAULT false,
    -- Higher rank may delegate to lower rank (command permission delegation, user admin).
    rank integer NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
SELECT lifebox_enable_global_rls('roles');

CREATE TABLE role_permissions (
    -- A role removed from the catalogue takes its permission rows with it.
    role text NOT NULL REFERENCES roles (name) ON DELETE CASCADE,
    permission text NOT NULL CHECK (permission ~ '^[a-z_]+(\.[a-z_]+)+$'),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (role, permission)
);
SELECT lifebox_enable_global_rls('role_permissions');

CREATE TABLE users (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- Deleting a tenant deletes its users; staff (NULL) are untouched.
    client_id uuid REFERENCES clients (id) ON DELETE CASCADE,
    email text NOT NULL CHECK (email ~ '^[^@\s]+@[^@\s]+$' AND length(email) <= 254),
    password_hash text NOT NULL,
    -- A role in use cannot disappear from under its users.
    role text NOT NULL REFERENCES roles (name) ON DELETE RESTRICT,
    display_name text,
    status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled', 'invited')),
    failed_login_count integer NOT NULL DEFAULT 0 CHECK (failed_login_count >= 0),
    locked_until timestamptz,
    last_login_at timestamptz,
    password_changed_at timestamptz NOT NULL DEFAULT now(),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_staff_have_no_client
        CHECK ((role IN ('super_user', 'admin')) = (client_id IS NULL)),
    -- Target of composite foreign keys that pin a child row to its user's tenant.
    CONSTRAINT users_id_client_key UNIQUE (id, client_id)
);
CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email));
CREATE INDEX users_client_idx ON users (client_id);
SELECT lifebox_enable_tenant_rls('users');
SELECT lifebox_track_updates('users');

CREATE TABLE password_reset_tokens (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- A token is worthless without its user.
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_id uuid,
    token_hash bytea NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),
    requested_ip inet,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at timestamptz,
    CHECK (expires_at > created_at),
    -- The token's tenant is its user's tenant (not checked for staff, whose client is NULL).
    FOREIGN KEY (user_id, client_id) REFERENCES users (id, client_id) ON DELETE CASCADE
);
CREATE INDEX password_reset_tokens_user_idx ON password_reset_tokens (user_id);
SELECT lifebox_enable_tenant_rls('password_reset_tokens');

CREATE TABLE refresh_tokens (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- Deleting a user ends all of its sessions.
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_id uuid,
    token_hash bytea NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),
    -- Every rotation of one login shares a family; reuse of a rotated token revokes it all.
    family_id uuid NOT NULL,
    -- Lineage survives pruning of old rows.
    parent_id uuid REFERENCES refresh_tokens (id) ON DELETE SET NULL,
    replaced_by uuid REFERENCES refresh_tokens (id) ON DELETE SET NULL,
    issued_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    last_used_at timestamptz,
    revoked_at timestamptz,
    revoked_reason text,
    user_agent text,
    ip inet,
    CHECK (expires_at > issued_at),
    FOREIGN KEY (user_id, client_id) REFERENCES users (id, client_id) ON DELETE CASCADE
);
CREATE INDEX refresh_tokens_user_idx ON refresh_tokens (user_id);
CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_expires_idx ON refresh_tokens (expires_at);
SELECT lifebox_enable_tenant_rls('refresh_tokens');

-- Pre-authentication lookups: the staff path is switched on for the lookup only and put
-- back before the function returns, so the caller's transaction stays on its own tenant. (On
-- error the transaction, or the caller's savepoint, rolls the setting back too.)
CREATE FUNCTION lifebox_auth_user_by_email(p_email text) RETURNS SETOF users
    LANGUAGE plpgsql
    AS $$
    DECLARE
        v_staff text := coalesce(current_setting('lifebox.staff', true), '');
    BEGIN
        PERFORM set_config('lifebox.staff', 'on', true);
        RETURN QUERY SELECT * FROM users WHERE lower(email) = lower(p_email);
        PERFORM set_config('lifebox.staff', v_staff, true);
    END
    $$;

CREATE FUNCTION lifebox_auth_refresh_token(p_token_hash bytea) RETURNS SETOF refresh_tokens
    LANGUAGE plpgsql
    AS $$
    DECLARE
        v_staff text := coalesce(current_setting('lifebox.staff', true), '');
    BEGIN
        PERFORM set_config('lifebox.staff', 'on', true);
        RETURN QUERY SELECT * FROM refresh_tokens WHERE token_hash = p_token_hash;
        PERFORM set_config('lifebox.staff', v_staff, true);
    END
    $$;

CREATE FUNCTION lifebox_auth_reset_token(p_token_hash bytea)
    RETURNS SETOF password_reset_tokens
    LANGUAGE plpgsql
    AS $$
    DECLARE
        v_staff text := coalesce(current_setting('lifebox.staff', true), '');
    BEGIN
        PERFORM set_config('lifebox.staff', 'on', true);
        RETURN QUERY SELECT * FROM password_reset_tokens WHERE token_hash = p_token_hash;
        PERFORM set_config('lifebox.staff', v_staff, true);
    END
    $$;
