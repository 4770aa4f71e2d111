-- 0042 the runtime roles' grants become rows, and `lifebox_apply_grants()` applies the rows.
--
-- Until now every migration that changed a runtime role's privileges had to restate the whole
-- function (0011, 0034), and one that forgot left the function behind the database
-- (0040 granted unknown_field_devices on its own). From here on a migration grants by
-- inserting rows into `runtime_grants` and calling the function; the function is the only
-- place that turns rows into GRANTs, and tests/test_grants.py checks that it alone rebuilds
-- what the migrations granted.
--
-- A row grants `privileges` on `relation` to `grantee`: on the whole table when `columns` is
-- NULL, else on those columns, or on every current column when `columns` = '{*}' (SELECT then
-- also covers the system column xmin, which live streams read). A (role, table) pair granted
-- by columns only first loses any table-level privilege it held: column grants are the point
-- there (the time-series parents, whose chunks copy table-level grants; the ingest role's
-- narrow reads). The function ends by making every partition and chunk private (0036).

CREATE TABLE runtime_grants (
    grantee name NOT NULL,
    privileges text NOT NULL,
    relation text NOT NULL,
    columns text[],
    why text,
    PRIMARY KEY (grantee, privileges, relation)
);
-- Only the owner reads or writes it (no runtime role is granted anything on it).

INSERT INTO runtime_grants (grantee, privileges, relation, columns, why)
SELECT 'lifebox_app', 'SELECT, INSERT, UPDATE, DELETE', t, NULL::text[], NULL FROM unnest(ARRAY[
    'clients', 'users', 'password_reset_tokens', 'refresh_tokens', 'role_permissions',
    'devices', 'device_metadata_snapshots', 'user_device_assignments', 'device_alarms',
    'unknown_field_catalog',
    'command_templates', 'control_commands', 'user_command_permissions',
    'alarm_rules', 'alarm_events', 'alarm_reactions',
    'subscriptions', 'customer_pricing', 'postpaid_periods', 'fawry_customer_data',
    'exchange_rates',
    'quick_view_pages', 'quick_view_page_devices', 'quick_view_page_command_templates',
    'quick_view_page_shares', 'files', 'widgets', 'dashboard_layouts',
    'calculation_formulas', 'auth_rate_limits']) t
UNION ALL
SELECT 'lifebox_app', 'SELECT, INSERT', t, NULL, 'append-only' FROM unnest(ARRAY[
    'device_metadata_history', 'command_executions', 'command_acknowledgments',
    'alarm_acknowledgments', 'credit_transactions']) t
UNION ALL
SELECT 'lifebox_app', p, t, '{*}'::text[], 'time series: by column, never copied to chunks'
FROM unnest(ARRAY['telemetry_events', 'device_locations', 'device_data_points']) t,
     unnest(ARRAY['SELECT', 'INSERT']) p
UNION ALL
SELECT 'lifebox_app', 'SELECT', t, NULL, 'reference and read-only' FROM unnest(ARRAY[
    'roles', 'command_permissions', 'ingest_rejects', 'unknown_field_devices']) t;

INSERT INTO runtime_grants (grantee, privileges, relation, columns, why) VALUES
    ('lifebox_app', 'SELECT, INSERT, UPDATE', 'device_latest_locations',
     NULL, 'moved forward by the trigger on device_locations, as the inserting role (0033)'),
    ('lifebox_app', 'SELECT, INSERT, UPDATE', 'fawry_payment_notifications',
     NULL, 'the payment webhook records, then marks processed; never deletes'),
    ('lifebox_ingest', 'INSERT', 'ingest_rejects', NULL, NULL),
    ('lifebox_ingest', 'INSERT', 'device_alarms', NULL, NULL),
    ('lifebox_ingest', 'INSERT', 'command_acknowledgments', NULL, NULL),
    ('lifebox_ingest', 'INSERT', 'command_executions', NULL, NULL),
    ('lifebox_ingest', 'INSERT', 'unknown_field_devices', NULL, NULL),
    ('lifebox_ingest', 'INSERT', 'telemetry_events', '{*}', 'COPY into the hypertable'),
    ('lifebox_ingest', 'SELECT', 'telemetry_events', '{device_id,time}',
     'ON CONFLICT (device_id, time) DO NOTHING reads the conflict target, never a value'),
    ('lifebox_ingest', 'SELECT', 'devices', '{id,client_id,serial,status,last_seen_at}',
     'resolve a topic''s serial to its device, check it and its client may send'),
    ('lifebox_ingest', 'UPDATE', 'devices', '{last_seen_at,status,firmware_version}',
     'last seen; a provisioned device turns active with its first accepted reading'),
    ('lifebox_ingest', 'SELECT', 'clients', '{id,status}', NULL),
    ('lifebox_ingest', 'SELECT', 'control_commands',
     '{id,client_id,device_id,status,delivered_at,completed_at,result}',
     'acks move a command along its lifecycle: only the columns they read (0032)'),
    ('lifebox_ingest', 'UPDATE', 'control_commands',
     '{status,sent_at,delivered_at,completed_at,result,error,updated_at}', NULL),
    ('lifebox_ingest', 'SELECT', 'device_alarms', '{device_id,code,raised_at}',
     'alarms are deduplicated with ON CONFLICT, which reads the conflict columns'),
    ('lifebox_ingest', 'SELECT, INSERT, UPDATE', 'unknown_field_catalog',
     NULL, 'upserted counts (ON CONFLICT DO UPDATE reads the row)'),
    ('lifebox_ingest', 'SELECT', 'unknown_field_devices', '{device_id,field_name}',
     'ON CONFLICT (device_id, field_name) DO NOTHING reads the conflict target');

-- Column privileges; '{*}' means every current column.
CREATE OR REPLACE FUNCTION lifebox_grant_columns(
    p_privileges text[], p_table regclass, p_role name, p_columns text[] DEFAULT '{*}'
) RETURNS void
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_columns text := CASE WHEN p_columns = '{*}' THEN (
        SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute
        WHERE attrelid = p_table AND attnum > 0 AND NOT attisdropped
    ) ELSE (SELECT string_agg(quote_ident(c), ', ') FROM unnest(p_columns) c) END;
BEGIN
    EXECUTE format(
        'GRANT %s ON TABLE %s TO %I',
        (SELECT string_agg(
             format('%s (%s%s)', p, v_columns,
                    CASE WHEN p = 'SELECT' AND p_columns = '{*}' THEN ', xmin' END), ', ')
         FROM unnest(p_privileges) p),
        p_table, p_role
    );
END
$$;

CREATE OR REPLACE FUNCTION lifebox_apply_grants() RETURNS text
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_role name;
    v_rule record;
    v_done text[] := '{}';
BEGIN
    FOR v_role IN SELECT DISTINCT grantee FROM runtime_grants ORDER BY 1 LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = v_role) THEN
            RAISE WARNING 'role % does not exist: no grants made for it', v_role;
            CONTINUE;
        END IF;
        EXECUTE format('GRANT USAGE ON SCHEMA public TO %I', v_role);
        -- Tables granted to this role by column only hold no table-level privilege.
        FOR v_rule IN
            SELECT relation FROM runtime_grants WHERE grantee = v_role
            GROUP BY relation HAVING bool_and(columns IS NOT NULL)
        LOOP
            EXECUTE format('REVOKE ALL ON public.%I FROM %I', v_rule.relation, v_role);
        END LOOP;
        FOR v_rule IN SELECT * FROM runtime_grants WHERE grantee = v_role LOOP
            IF v_rule.columns IS NULL THEN
                EXECUTE format('GRANT %s ON public.%I TO %I',
                               v_rule.privileges, v_rule.relation, v_role);
            ELSE
                PERFORM lifebox_grant_columns(
                    string_to_array(v_rule.privileges, ', '),
                    format('public.%I', v_rule.relation)::regclass, v_role, v_rule.columns);
            END IF;
        END LOOP;
        v_done := v_done || v_role::text;
    END LOOP;
    IF 'lifebox_app' = ANY (v_done) THEN
        GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO lifebox_app;
    END IF;
    IF 'lifebox_ingest' = ANY (v_done) THEN
        -- COPY cannot skip duplicates: a redelivered batch is COPied into a session temp
        -- table and merged with INSERT ... ON CONFLICT DO NOTHING.
        EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO lifebox_ingest', current_database());
    END IF;
    PERFORM lifebox_private_time_series_children();
    RETURN 'granted: ' || coalesce(nullif(array_to_string(v_done, ', '), ''), 'nobody');
END
$$;

SELECT lifebox_apply_grants();
