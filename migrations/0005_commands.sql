-- 0005 commands: the catalogue of command types, templates, commands sent to devices, their
-- acknowledgments, who may send what (with delegation), and the append-only audit trail.
--
-- command_permissions is platform reference data (global RLS: everyone reads, staff write).
-- command_templates mixes global templates (client_id NULL, seeded, readable by every tenant)
-- with a tenant's own templates (client_id set, visible to that tenant only). Commands keep
-- their template (RESTRICT semantics): history must say what was sent.

CREATE TABLE command_permissions (
    code text PRIMARY KEY CHECK (code ~ '^[a-z][a-z0-9_]{1,63}$'),
    name text NOT NULL,
    description text NOT NULL,
    category text NOT NULL,
    risk_level text NOT NULL DEFAULT 'low' CHECK (risk_level IN ('low', 'medium', 'high')),
    requires_confirmation boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now()
);
SELECT lifebox_enable_global_rls('command_permissions');

CREATE TABLE command_templates (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- NULL: a platform template shared by all tenants. Set: that tenant's own template,
    -- deleted with the tenant.
    client_id uuid REFERENCES clients (id) ON DELETE CASCADE,
    code text NOT NULL CHECK (code ~ '^[a-z][a-z0-9_]{1,63}$'),
    name text NOT NULL,
    description text NOT NULL DEFAULT '',
    -- The permission a user needs to send it; a permission in use cannot be removed.
    command_permission text NOT NULL REFERENCES command_permissions (code) ON DELETE RESTRICT,
    -- JSON Schema (draft 2020-12) of the parameters object.
    parameters_schema jsonb NOT NULL
        CHECK (jsonb_typeof(parameters_schema) = 'object'
               AND parameters_schema ->> 'type' = 'object'),
    default_parameters jsonb NOT NULL DEFAULT '{}'
        CHECK (jsonb_typeof(default_parameters) = 'object'),
    timeout_s integer NOT NULL DEFAULT 60 CHECK (timeout_s > 0),
    max_retries integer NOT NULL DEFAULT 3 CHECK (max_retries >= 0),
    enabled boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT command_templates_client_code_key UNIQUE NULLS NOT DISTINCT (client_id, code)
);
ALTER TABLE command_templates ENABLE ROW LEVEL SECURITY;
ALTER TABLE command_templates FORCE ROW LEVEL SECURITY;
-- Global templates are readable by every tenant; only their own rows are writable, and
-- global ones only on the staff path (lifebox_tenant_visible(NULL) is false for tenants).
CREATE POLICY tenant_or_global_read ON command_templates FOR SELECT
    USING (client_id IS NULL OR lifebox_tenant_visible(client_id));
CREATE POLICY tenant_isolation ON command_templates FOR ALL
    USING (lifebox_tenant_visible(client_id)) WITH CHECK (lifebox_tenant_visible(client_id));
SELECT lifebox_track_updates('command_templates');

CREATE TABLE control_commands (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    client_id uuid NOT NULL,
    device_id uuid NOT NULL,
    -- NO ACTION (checked at statement end): a template used by a command cannot be deleted,
    -- yet deleting a whole tenant, which removes both in one statement, still works.
    template_id uuid NOT NULL REFERENCES command_templates (id) ON DELETE NO ACTION,
    command_type text NOT NULL,
    parameters jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(parameters) = 'object'),
    status text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'sent', 'delivered', 'acknowledged', 'completed',
                          'failed', 'expired', 'cancelled')),
    -- Who asked survives the asker's deletion as NULL; command_executions keeps the detail.
    issued_by uuid REFERENCES users (id) ON DELETE SET NULL,
    issued_at timestamptz NOT NULL DEFAULT now(),
    sent_at timestamptz,
    delivered_at timestamptz,
    completed_at timestamptz,
    expires_at timestamptz NOT NULL,
    retries integer NOT NULL DEFAULT 0 CHECK (retries >= 0),
    max_retries integer NOT NULL DEFAULT 3 CHECK (max_retries >= 0),
    correlation_id uuid NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    result jsonb,
    error text,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK (expires_at > issued_at),
    CONSTRAINT control_commands_id_client_key UNIQUE (id, client_id),
    -- Commands are the device's history: purged with the device.
    FOREIGN KEY (device_id, client_id) REFERENCES devices (id, client_id) ON DELETE CASCADE
);
CREATE INDEX control_commands_device_idx ON control_commands (device_id, issued_at DESC);
CREATE INDEX control_commands_client_idx ON control_commands (client_id, issued_at DESC);
-- The dispatcher's work queue: only commands still in flight.
CREATE INDEX control_commands_in_flight_idx ON control_commands (status, expires_at)
    WHERE status IN ('pending', 'sent', 'delivered');
CREATE INDEX control_commands_template_idx ON control_commands (template_id);
SELECT lifebox_enable_tenant_rls('control_commands');
SELECT lifebox_track_updates('control_commands');

CREATE TABLE command_acknowledgments (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    client_id uuid NOT NULL,
    command_id uuid NOT NULL,
    status text NOT NULL
        CHECK (status IN ('received', 'accepted', 'rejected', 'completed', 'failed')),
    result jsonb,
    device_time timestamptz,
    received_at timestamptz NOT NULL DEFAULT now(),
    -- Acks are part of their command.
    FOREIGN KEY (command_id, client_id) REFERENCES control_commands (id, client_id)
        ON DELETE CASCADE
);
CREATE INDEX command_acknowledgments_command_idx
    ON command_acknowledgments (command_id, received_at);
CREATE INDEX command_acknowledgments_client_idx ON command_acknowledgments (client_id);
SELECT lifebox_enable_tenant_rls('command_acknowledgments');

CREATE TABLE user_command_permissions (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    client_id uuid NOT NULL,
    user_id uuid NOT NULL,
    -- Removing a command type from the catalogue removes the grants of it.
    command_permission text NOT NULL REFERENCES command_permissions (code) ON DELETE CASCADE,
    -- NULL: every device the user may see. Set: that device only.
    device_id uuid,
    can_delegate boolean NOT NULL DEFAULT false,
    granted_by uuid REFERENCES users (id) ON DELETE SET NULL,
    -- Delegation chain: revoking (deleting) a grant revokes everything delegated from it.
    parent_grant_id uuid REFERENCES user_command_permissions (id) ON DELETE CASCADE,
    granted_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz,
    CONSTRAINT user_command_permissions_key
        UNIQUE NULLS NOT DISTINCT (user_id, command_permission, device_id),
    FOREIGN KEY (user_id, client_id) REFERENCES users (id, client_id) ON DELETE CASCADE,
    -- ON DELETE CASCADE of a device-scoped grant: it named that device only.
    FOREIGN KEY (device_id, client_id) REFERENCES devices (id, client_id) ON DELETE CASCADE
);
CREATE INDEX user_command_permissions_client_idx ON user_command_permissions (client_id);
CREATE INDEX user_command_permissions_parent_idx ON user_command_permissions (parent_grant_id);
CREATE INDEX user_command_permissions_device_idx ON user_command_permissions (device_id);
SELECT lifebox_enable_tenant_rls('user_command_permissions');

-- Append-only: the application role may INSERT and SELECT only (see 0011).
CREATE TABLE command_executions (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    client_id uuid NOT NULL,
    command_id uuid NOT NULL,
    from_status text,
    to_status text NOT NULL,
    actor_kind text NOT NULL CHECK (actor_kind IN ('user', 'device', 'system')),
    -- The trail keeps the transition even when the user is deleted.
    actor_user_id uuid REFERENCES users (id) ON DELETE SET NULL,
    detail jsonb NOT NULL DEFAULT '{}',
    at timestamptz NOT NULL DEFAULT now(),
    -- The trail is the command's: a purged command (with its device) takes its trail.
    FOREIGN KEY (command_id, client_id) REFERENCES control_commands (id, client_id)
        ON DELETE CASCADE
);
CREATE INDEX command_executions_command_idx ON command_executions (command_id, at);
CREATE INDEX command_executions_client_idx ON command_executions (client_id, at DESC);
SELECT lifebox_enable_tenant_rls('command_executions');
