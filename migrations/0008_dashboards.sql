-- 0008 dashboards: quick-view pages (with their devices and command templates, and shares),
-- files, widgets, per-user dashboard layouts and calculation formulas.
--
-- Everything here is tenant content owned by a user: deleting the owner deletes their pages
-- and layouts (nobody else can edit them), while files and formulas outlive their author
-- (owner set NULL) because other pages and data points use them.

CREATE TABLE quick_view_pages (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    client_id uuid NOT NULL,
    owner_id uuid NOT NULL,
    title text NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    description text NOT NULL DEFAULT '',
    layout jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(layout) = 'object'),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT quick_view_pages_id_client_key UNIQUE (id, client_id),
    FOREIGN KEY (owner_id, client_id) REFERENCES users (id, client_id) ON DELETE CASCADE
);
CREATE INDEX quick_view_pages_client_idx ON quick_view_pages (client_id);
CREATE INDEX quick_view_pages_owner_idx ON quick_view_pages (owner_id);
SELECT lifebox_enable_tenant_rls('quick_view_pages');
SELECT lifebox_track_updates('quick_view_pages');

-- Page <-> device (many-to-many). A link goes with either end.
CREATE TABLE quick_view_page_devices (
    client_id uuid NOT NULL,
    page_id uuid NOT NULL,
    device_id uuid NOT NULL,
    position integer NOT NULL DEFAULT 0,
    PRIMARY KEY (page_id, device_id),
    FOREIGN KEY (page_id, client_id) REFERENCES quick_view_pages (id, client_id)
        ON DELETE CASCADE,
    FOREIGN KEY (device_id, client_id) REFERENCES devices (id, client_id) ON DELETE CASCADE
);
CREATE INDEX quick_view_page_devices_device_idx ON quick_view_page_devices (device_id);
CREATE INDEX quick_view_page_devices_client_idx ON quick_view_page_devices (client_id);
SELECT lifebox_enable_tenant_rls('quick_view_page_devices');

-- Page <-> command template (many-to-many; the template may be global). A link goes with
-- either end.
CREATE TABLE quick_view_page_command_templates (
    client_id uuid NOT NULL,
    page_id uuid NOT NULL,
    template_id uuid NOT NULL REFERENCES command_templates (id) ON DELETE CASCADE,
    position integer NOT NULL DEFAULT 0,
    PRIMARY KEY (page_id, template_id),
    FOREIGN KEY (page_id, client_id) REFERENCES quick_view_pages (id, client_id)
        ON DELETE CASCADE
);
CREATE INDEX quick_view_page_command_templates_template_idx
    ON quick_view_page_command_templates (template_id);
CREATE INDEX quick_view_page_command_templates_client_idx
    ON quick_view_page_command_templates (client_id);
SELECT lifebox_enable_tenant_rls('quick_view_page_command_templates');

CREATE TABLE quick_view_page_shares (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    client_id uuid NOT NULL,
    page_id uuid NOT NULL,
    user_id uuid NOT NULL,
    permission text NOT NULL DEFAULT 'view' CHECK (permission IN ('view', 'edit')),
    shared_by uuid REFERENCES users (id) ON DELETE SET NULL,
    shared_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (page_id, user_id),
    -- A share goes with its page or its recipient; shares never cross tenants.
    FOREIGN KEY (page_id, client_id) REFERENCES quick_view_pages (id, client_id)
        ON DELETE CASCADE,
    FOREIGN KEY (user_id, client_id) REFERENCES users (id, client_id) ON DELETE CASCADE
);
CREATE INDEX quick_view_page_shares_user_idx ON quick_view_page_shares (user_id);
CREATE INDEX quick_view_page_shares_client_idx ON quick_view_page_shares (client_id);
SELECT lifebox_enable_tenant_rls('quick_view_page_shares');

CREATE TABLE files (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    client_id uuid NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    owner_id uuid REFERENCES users (id) ON DELETE SET NULL,
    -- Optionally about one device; the file stays (unlinked) when the device goes.
    device_id uuid,
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 255),
    content_type text NOT NULL,
    size_bytes bigint NOT NULL CHECK (size_bytes >= 0),
    sha256 bytea NOT NULL CHECK (octet_length(sha256) = 32),
    storage_key text NOT NULL UNIQUE,
    access_level text NOT NULL DEFAULT 'private'
        CHECK (access_level IN ('private', 'shared', 'client')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (device_id, client_id) REFERENCES devices (id, client_id)
        ON DELETE SET NULL (device_id)
);
CREATE INDEX files_client_idx ON files (client_id, created_at DESC);
CREATE INDEX files_owner_idx ON files (owner_id);
CREATE INDEX files_device_idx ON files (device_id);
SELECT lifebox_enable_tenant_rls('files');
SELECT lifebox_track_updates('files');

CREATE TABLE dashboard_layouts (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    client_id uuid NOT NULL,
    user_id uuid NOT NULL,
    name text NOT NULL DEFAULT 'default',
    layout jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(layout) = 'object'),
    is_default boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, name),
    CONSTRAINT dashboard_layouts_id_client_key UNIQUE (id, client_id),
    -- Per-user: goes with the user.
    FOREIGN KEY (user_id, client_id) REFERENCES users (id, client_id) ON DELETE CASCADE
);
CREATE UNIQUE INDEX dashboard_layouts_one_default_key ON dashboard_layouts (user_id)
    WHERE is_default;
CREATE INDEX dashboard_layouts_client_idx ON dashboard_layouts (client_id);
SELECT lifebox_enable_tenant_rls('dashboard_layouts');
SELECT lifebox_track_updates('dashboard_layouts');

CREATE TABLE widgets (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    client_id uuid NOT NULL,
    -- A widget sits on a dashboard layout or on a quick-view page and goes with it.
    layout_id uuid,
    page_id uuid,
    kind text NOT NULL
        CHECK (kind IN ('chart', 'gauge', 'stat', 'table', 'map', 'alarm_list',
                        'command_button', 'text')),
    title text NOT NULL DEFAULT '',
    -- What the widget shows: device(s), fields, time window, thresholds...
    config jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(config) = 'object'),
    position jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(position) = 'object'),
    device_id uuid,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK (num_nonnulls(layout_id, page_id) = 1),
    FOREIGN KEY (layout_id, client_id) REFERENCES dashboard_layouts (id, client_id)
        ON DELETE CASCADE,
    FOREIGN KEY (page_id, client_id) REFERENCES quick_view_pages (id, client_id)
        ON DELETE CASCADE,
    -- A widget outlives the device it pointed at (it shows "no device").
    FOREIGN KEY (device_id, client_id) REFERENCES devices (id, client_id)
        ON DELETE SET NULL (device_id)
);
CREATE INDEX widgets_layout_idx ON widgets (layout_id);
CREATE INDEX widgets_page_idx ON widgets (page_id);
CREATE INDEX widgets_device_idx ON widgets (device_id);
CREATE INDEX widgets_client_idx ON widgets (client_id);
SELECT lifebox_enable_tenant_rls('widgets');
SELECT lifebox_track_updates('widgets');

CREATE TABLE calculation_formulas (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    client_id uuid NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    name text NOT NULL CHECK (name ~ '^[a-z][a-z0-9_]{0,63}$'),
    description text NOT NULL DEFAULT '',
    -- An arithmetic expression over the inputs, e.g. "voltage_l1 * current_l1 / 1000".
    expression text NOT NULL,
    unit text,
    -- The telemetry fields (or other metrics) the expression reads: a JSON array of names.
    inputs jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(inputs) = 'array'),
    enabled boolean NOT NULL DEFAULT true,
    created_by uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (client_id, name)
);
SELECT lifebox_enable_tenant_rls('calculation_formulas');
SELECT lifebox_track_updates('calculation_formulas');

-- Data points computed by a formula keep their values when the formula is deleted.
ALTER TABLE device_data_points
    ADD CONSTRAINT device_data_points_formula_fkey FOREIGN KEY (formula_id)
        REFERENCES calculation_formulas (id) ON DELETE SET NULL;
