-- 0006 alarms: tenant-defined rules over telemetry fields, the events they raise, what a rule
-- does when it fires, and who acknowledged what.
--
-- Event status follows ISA-18.2: active/cleared x unacknowledged/acknowledged. At most one
-- open (active) event per rule and device, enforced by a partial unique index, so two ingest
-- replicas evaluating the same reading cannot both raise it.

CREATE TABLE alarm_rules (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- Rules are tenant configuration and go with the tenant.
    client_id uuid NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    description text NOT NULL DEFAULT '',
    -- One device, or (NULL) every device matching device_filter (NULL filter: all devices).
    device_id uuid,
    device_filter jsonb CHECK (device_filter IS NULL OR jsonb_typeof(device_filter) = 'object'),
    field text NOT NULL,
    condition text NOT NULL
        CHECK (condition IN ('gt', 'gte', 'lt', 'lte', 'eq', 'neq', 'between', 'outside',
                             'absent')),
    threshold_low double precision,
    threshold_high double precision,
    -- The condition must hold this long before the event is raised.
    duration_s integer NOT NULL DEFAULT 0 CHECK (duration_s >= 0),
    -- Clearing needs the value back past the threshold by this much (no flapping).
    hysteresis double precision NOT NULL DEFAULT 0 CHECK (hysteresis >= 0),
    severity text NOT NULL DEFAULT 'warning'
        CHECK (severity IN ('info', 'warning', 'minor', 'major', 'critical')),
    enabled boolean NOT NULL DEFAULT true,
    created_by uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK (condition NOT IN ('between', 'outside')
           OR (threshold_low IS NOT NULL AND threshold_high IS NOT NULL
               AND threshold_low <= threshold_high)),
    CONSTRAINT alarm_rules_id_client_key UNIQUE (id, client_id),
    -- A rule written for one device has no meaning without it.
    FOREIGN KEY (device_id, client_id) REFERENCES devices (id, client_id) ON DELETE CASCADE
);
CREATE INDEX alarm_rules_client_idx ON alarm_rules (client_id) WHERE enabled;
CREATE INDEX alarm_rules_device_idx ON alarm_rules (device_id);
SELECT lifebox_enable_tenant_rls('alarm_rules');
SELECT lifebox_track_updates('alarm_rules');

CREATE TABLE alarm_events (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    client_id uuid NOT NULL,
    rule_id uuid NOT NULL,
    device_id uuid NOT NULL,
    severity text NOT NULL CHECK (severity IN ('info', 'warning', 'minor', 'major', 'critical')),
    status text NOT NULL DEFAULT 'active_unack'
        CHECK (status IN ('active_unack', 'active_ack', 'cleared_unack', 'cleared_ack')),
    raised_at timestamptz NOT NULL DEFAULT now(),
    cleared_at timestamptz,
    acknowledged_at timestamptz,
    trigger_value double precision,
    clear_value double precision,
    message text,
    details jsonb NOT NULL DEFAULT '{}',
    CHECK ((status IN ('cleared_unack', 'cleared_ack')) = (cleared_at IS NOT NULL)),
    CONSTRAINT alarm_events_id_client_key UNIQUE (id, client_id),
    -- Events are the rule's and the device's history: both cascade.
    FOREIGN KEY (rule_id, client_id) REFERENCES alarm_rules (id, client_id) ON DELETE CASCADE,
    FOREIGN KEY (device_id, client_id) REFERENCES devices (id, client_id) ON DELETE CASCADE
);
CREATE UNIQUE INDEX alarm_events_one_open_key ON alarm_events (rule_id, device_id)
    WHERE status IN ('active_unack', 'active_ack');
CREATE INDEX alarm_events_client_idx ON alarm_events (client_id, raised_at DESC);
CREATE INDEX alarm_events_device_idx ON alarm_events (device_id, raised_at DESC);
SELECT lifebox_enable_tenant_rls('alarm_events');

CREATE TABLE alarm_reactions (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    client_id uuid NOT NULL,
    rule_id uuid NOT NULL,
    kind text NOT NULL CHECK (kind IN ('command', 'webhook', 'email', 'notify')),
    -- For kind = 'command'. NO ACTION: a template a reaction uses can't be deleted on its
    -- own, but a whole-tenant delete that removes both still works.
    command_template_id uuid REFERENCES command_templates (id) ON DELETE NO ACTION,
    parameters jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(parameters) = 'object'),
    webhook_url text CHECK (webhook_url IS NULL OR webhook_url ~ '^https?://'),
    position integer NOT NULL DEFAULT 0,
    enabled boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK (kind <> 'command' OR command_template_id IS NOT NULL),
    CHECK (kind <> 'webhook' OR webhook_url IS NOT NULL),
    -- A reaction is part of its rule.
    FOREIGN KEY (rule_id, client_id) REFERENCES alarm_rules (id, client_id) ON DELETE CASCADE
);
CREATE INDEX alarm_reactions_rule_idx ON alarm_reactions (rule_id, position);
CREATE INDEX alarm_reactions_client_idx ON alarm_reactions (client_id);
CREATE INDEX alarm_reactions_template_idx ON alarm_reactions (command_template_id);
SELECT lifebox_enable_tenant_rls('alarm_reactions');

CREATE TABLE alarm_acknowledgments (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    client_id uuid NOT NULL,
    event_id uuid NOT NULL,
    -- The acknowledgment stays on record when the user is deleted.
    user_id uuid REFERENCES users (id) ON DELETE SET NULL,
    acknowledged_at timestamptz NOT NULL DEFAULT now(),
    note text,
    FOREIGN KEY (event_id, client_id) REFERENCES alarm_events (id, client_id) ON DELETE CASCADE
);
CREATE INDEX alarm_acknowledgments_event_idx ON alarm_acknowledgments (event_id);
CREATE INDEX alarm_acknowledgments_client_idx ON alarm_acknowledgments (client_id);
SELECT lifebox_enable_tenant_rls('alarm_acknowledgments');
