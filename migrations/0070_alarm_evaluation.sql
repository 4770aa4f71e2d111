-- 0070 alarm evaluation (issue 15): rule kinds and scopes in alarm_rules (one row says all a
-- rule is), the evaluation state per rule and device, a durable per-device watermark, and
-- the change log of events (raise, acknowledge, clear) that StreamAlarmEvents follows.
--
-- Kinds: threshold (gt/gte/lt/lte/eq/neq on a field), range (between/outside), expression
-- (CEL, checked by the same native code that evaluates it), rate (change per second of a
-- field over window_s), no_data (no accepted reading, or no value of `field`, for
-- duration_s) and device_alarm (a hardware alarm the device reported, of at least
-- device_alarm_severity). Any kind may hold for duration_s before raising (no_data: the
-- silence itself) and for clear_after_s before clearing; hysteresis widens the clear band.
--
-- Evaluation is after commit: readings are evaluated per device in time order from the
-- device's watermark (alarm_device_cursors.evaluated_through), under that row's lock, in one
-- transaction that also writes the events, their changes, the states and the new watermark.
-- So a crash anywhere leaves either all of it or none, and the next evaluation resumes from
-- the watermark over the readings already in telemetry_events.

ALTER TABLE alarm_rules
    ADD COLUMN kind text NOT NULL DEFAULT 'threshold'
        CHECK (kind IN ('threshold', 'range', 'expression', 'rate', 'no_data', 'device_alarm')),
    ADD COLUMN device_type text CHECK (device_type IS NULL OR length(device_type) BETWEEN 1 AND 100),
    ADD COLUMN expression text CHECK (expression IS NULL OR length(expression) <= 1000),
    -- Expression rules: clear when this holds (NULL: when the expression no longer holds).
    ADD COLUMN clear_expression text
        CHECK (clear_expression IS NULL OR length(clear_expression) <= 1000),
    -- The clearing condition must hold this long before the event clears (min dwell).
    ADD COLUMN clear_after_s integer NOT NULL DEFAULT 0 CHECK (clear_after_s >= 0),
    -- Rate rules: the change of `field` per second over this window.
    ADD COLUMN window_s integer CHECK (window_s IS NULL OR window_s > 0),
    ADD COLUMN device_alarm_severity text
        CHECK (device_alarm_severity IS NULL
               OR device_alarm_severity IN ('info', 'warning', 'minor', 'major', 'critical')),
    -- Filled from the reading: {value}, {field}, {rule}, {device} and any reading field.
    ADD COLUMN message_template text
        CHECK (message_template IS NULL OR length(message_template) <= 500),
    ALTER COLUMN field DROP NOT NULL,
    ALTER COLUMN condition DROP NOT NULL;

-- Which devices: one (device_id), a type (device_type), those whose metadata contains
-- device_filter, or (none of them) every device of the tenant. The target says the scope.
ALTER TABLE alarm_rules
    ADD COLUMN scope text GENERATED ALWAYS AS (CASE
        WHEN device_id IS NOT NULL THEN 'device'
        WHEN device_type IS NOT NULL THEN 'device_type'
        WHEN device_filter IS NOT NULL THEN 'metadata'
        ELSE 'tenant' END) STORED,
    ADD CONSTRAINT alarm_rules_one_target CHECK (
        num_nonnulls(device_id, device_type, device_filter) <= 1),
    ADD CONSTRAINT alarm_rules_kind_shape CHECK (CASE kind
        WHEN 'threshold' THEN field IS NOT NULL
            AND condition IN ('gt', 'gte', 'lt', 'lte', 'eq', 'neq')
            AND threshold_high IS NOT NULL
        WHEN 'range' THEN field IS NOT NULL AND condition IN ('between', 'outside')
        WHEN 'expression' THEN expression IS NOT NULL
        WHEN 'rate' THEN field IS NOT NULL AND window_s IS NOT NULL
            AND condition IN ('gt', 'gte', 'lt', 'lte') AND threshold_high IS NOT NULL
        WHEN 'no_data' THEN duration_s > 0 AND (condition IS NULL OR condition = 'absent')
        WHEN 'device_alarm' THEN device_alarm_severity IS NOT NULL
    END);
CREATE INDEX alarm_rules_type_idx ON alarm_rules (client_id, device_type) WHERE enabled;

-- Where evaluation of one rule on one device stands. A row exists once the rule has seen
-- the device; it changes only when the condition starts or stops holding, or an event is
-- raised or cleared (the per-device watermark records the readings evaluated).
CREATE TABLE alarm_rule_states (
    client_id uuid NOT NULL,
    rule_id uuid NOT NULL,
    device_id uuid NOT NULL,
    -- The open event, if any.
    event_id uuid,
    -- The raising condition has held continuously since (reading time), not yet raised.
    pending_since timestamptz,
    -- The clearing condition has held continuously since, event still open.
    clear_since timestamptz,
    last_value double precision,
    last_time timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (rule_id, device_id),
    FOREIGN KEY (rule_id, client_id) REFERENCES alarm_rules (id, client_id) ON DELETE CASCADE,
    FOREIGN KEY (device_id, client_id) REFERENCES devices (id, client_id) ON DELETE CASCADE
);
CREATE INDEX alarm_rule_states_device_idx ON alarm_rule_states (device_id);
CREATE INDEX alarm_rule_states_client_idx ON alarm_rule_states (client_id);
SELECT lifebox_enable_tenant_rls('alarm_rule_states');

-- The durable per-device watermark: every reading of the device at or before
-- evaluated_through has been evaluated (late ones are counted, see late_readings).
CREATE TABLE alarm_device_cursors (
    device_id uuid PRIMARY KEY,
    client_id uuid NOT NULL,
    evaluated_through timestamptz NOT NULL,
    -- Readings found older than the watermark when they were committed.
    late_readings bigint NOT NULL DEFAULT 0 CHECK (late_readings >= 0),
    updated_at timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (device_id, client_id) REFERENCES devices (id, client_id) ON DELETE CASCADE
);
CREATE INDEX alarm_device_cursors_client_idx ON alarm_device_cursors (client_id);
SELECT lifebox_enable_tenant_rls('alarm_device_cursors');

-- Every change of an event, written in the transaction that makes it (the audit trail and
-- the feed of StreamAlarmEvents): raised and cleared at reading times, acknowledged at the
-- time of the acknowledgment.
CREATE TABLE alarm_event_changes (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    client_id uuid NOT NULL,
    event_id uuid NOT NULL,
    rule_id uuid NOT NULL,
    device_id uuid NOT NULL,
    change text NOT NULL CHECK (change IN ('raised', 'acknowledged', 'cleared')),
    -- The event's status after the change.
    status text NOT NULL
        CHECK (status IN ('active_unack', 'active_ack', 'cleared_unack', 'cleared_ack')),
    changed_at timestamptz NOT NULL,
    -- When it was committed (streams read changes in this order, with overlap).
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (event_id, change),
    FOREIGN KEY (event_id, client_id) REFERENCES alarm_events (id, client_id) ON DELETE CASCADE
);
CREATE INDEX alarm_event_changes_client_idx ON alarm_event_changes (client_id, recorded_at);
CREATE INDEX alarm_event_changes_device_idx ON alarm_event_changes (device_id, recorded_at);
SELECT lifebox_enable_tenant_rls('alarm_event_changes');

-- Ingest evaluates: it reads rules, the devices they scope and the readings, and writes
-- events, their changes, states and watermarks. It never deletes.
UPDATE runtime_grants
SET columns = columns || '{device_type,metadata}'::text[],
    why = why || '; alarm rules scope devices by type and metadata (0070)'
WHERE grantee = 'lifebox_ingest' AND privileges = 'SELECT' AND relation = 'devices';
-- The typed numeric and boolean fields a rule may name, never `extra` or text.
UPDATE runtime_grants
SET columns = columns || '{voltage_l1,voltage_l2,voltage_l3,current_l1,current_l2,current_l3,'
    'active_power_w,reactive_power_var,apparent_power_va,power_factor,frequency_hz,'
    'energy_import_kwh,energy_export_kwh,temperature_c,humidity_pct,pressure_hpa,battery_v,'
    'battery_pct,rssi_dbm,snr_db,latitude,longitude,altitude_m,co2_ppm,pm25_ugm3,uptime_s,'
    'packet_seq,tx_bytes,rx_bytes,error_count,reboot_count,relay_on,door_open,tamper_alarm,'
    'low_battery}'::text[],
    why = why || '; alarm evaluation reads the fields rules name, after commit (0070)'
WHERE grantee = 'lifebox_ingest' AND privileges = 'SELECT' AND relation = 'telemetry_events';
INSERT INTO runtime_grants (grantee, privileges, relation, columns, why) VALUES
    ('lifebox_ingest', 'SELECT', 'alarm_rules', NULL, 'rules to evaluate'),
    ('lifebox_ingest', 'SELECT, INSERT, UPDATE', 'alarm_events', NULL,
     'raise and clear events'),
    ('lifebox_ingest', 'SELECT, INSERT, UPDATE', 'alarm_rule_states', NULL, NULL),
    ('lifebox_ingest', 'SELECT, INSERT, UPDATE', 'alarm_device_cursors', NULL, NULL),
    ('lifebox_ingest', 'INSERT', 'alarm_event_changes', NULL, 'raise and clear changes'),
    ('lifebox_app', 'SELECT', 'alarm_rule_states', NULL, 'read-only: ingest evaluates'),
    ('lifebox_app', 'SELECT', 'alarm_device_cursors', NULL, 'read-only: ingest evaluates'),
    ('lifebox_app', 'SELECT, INSERT', 'alarm_event_changes', NULL,
     'append-only: acknowledgments; streams read');
SELECT lifebox_apply_grants();
