-- 0034 grants, complete again: `lifebox_apply_grants()` (0011) is what an operator runs once
-- the runtime roles exist on an external database, and what re-running must leave unchanged.
-- Migrations after 0011 granted and revoked on their own (0020 auth_rate_limits, 0021
-- role_permissions writes, 0032 the ingest role's narrower control_commands and its
-- device_alarms conflict columns, 0033 device_latest_locations), so the function had fallen
-- behind: run for a role made later it missed those grants, and re-run it widened the ingest
-- role's read of control_commands again. It is replaced with the whole current set; a
-- migration that changes a runtime role's grants changes this function too
-- (tests/test_grants.py checks that the function alone rebuilds what the migrations granted).

CREATE OR REPLACE FUNCTION lifebox_apply_grants() RETURNS text
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_crud text[] := ARRAY[
        'clients', 'users', 'password_reset_tokens', 'refresh_tokens', 'role_permissions',
        'devices', 'device_metadata_snapshots', 'user_device_assignments', 'device_alarms',
        'unknown_field_catalog', 'device_data_points',
        'command_templates', 'control_commands', 'user_command_permissions',
        'alarm_rules', 'alarm_events', 'alarm_reactions',
        'subscriptions', 'customer_pricing', 'postpaid_periods', 'fawry_customer_data',
        'exchange_rates',
        'quick_view_pages', 'quick_view_page_devices', 'quick_view_page_command_templates',
        'quick_view_page_shares', 'files', 'widgets', 'dashboard_layouts',
        'calculation_formulas', 'auth_rate_limits'];
    v_append_only text[] := ARRAY[
        'device_metadata_history', 'command_executions', 'command_acknowledgments',
        'alarm_acknowledgments', 'credit_transactions', 'telemetry_events', 'device_locations'];
    v_read_only text[] := ARRAY['roles', 'command_permissions', 'ingest_rejects'];
    v_done text[] := '{}';
    v_table text;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'lifebox_app') THEN
        GRANT USAGE ON SCHEMA public TO lifebox_app;
        FOREACH v_table IN ARRAY v_crud LOOP
            EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON public.%I TO lifebox_app',
                           v_table);
        END LOOP;
        FOREACH v_table IN ARRAY v_append_only LOOP
            EXECUTE format('GRANT SELECT, INSERT ON public.%I TO lifebox_app', v_table);
        END LOOP;
        FOREACH v_table IN ARRAY v_read_only LOOP
            EXECUTE format('GRANT SELECT ON public.%I TO lifebox_app', v_table);
        END LOOP;
        -- Staff edit role permissions (0021); their row-level security admits only the
        -- staff path to write.
        GRANT INSERT, DELETE ON public.role_permissions TO lifebox_app;
        -- Moved forward only by the trigger on device_locations, as the inserting role (0033).
        GRANT SELECT, INSERT, UPDATE ON public.device_latest_locations TO lifebox_app;
        -- The payment webhook records and then marks notifications processed; never deletes.
        GRANT SELECT, INSERT, UPDATE ON public.fawry_payment_notifications TO lifebox_app;
        GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO lifebox_app;
        v_done := v_done || 'lifebox_app'::text;
    ELSE
        RAISE WARNING 'role lifebox_app does not exist: no grants made for it';
    END IF;

    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'lifebox_ingest') THEN
        GRANT USAGE ON SCHEMA public TO lifebox_ingest;
        GRANT INSERT ON public.telemetry_events, public.ingest_rejects, public.device_alarms,
            public.command_acknowledgments, public.command_executions TO lifebox_ingest;
        -- INSERT ... ON CONFLICT (device_id, time) DO NOTHING must read the conflict target:
        -- the key columns only, never a value or a tenant.
        GRANT SELECT (device_id, time) ON public.telemetry_events TO lifebox_ingest;
        -- Resolve a topic's serial to its device and check the device and client may send.
        -- ...and record when it was last seen (a provisioned device turns active with its
        -- first accepted reading).
        GRANT SELECT (id, client_id, serial, status, last_seen_at) ON public.devices
            TO lifebox_ingest;
        GRANT UPDATE (last_seen_at, status, firmware_version) ON public.devices
            TO lifebox_ingest;
        GRANT SELECT (id, status) ON public.clients TO lifebox_ingest;
        -- Acks move a command along its lifecycle: only the columns they read (0032).
        REVOKE SELECT ON public.control_commands FROM lifebox_ingest;
        GRANT SELECT (id, client_id, device_id, status, delivered_at, completed_at, result)
            ON public.control_commands TO lifebox_ingest;
        GRANT UPDATE (status, sent_at, delivered_at, completed_at, result, error, updated_at)
            ON public.control_commands TO lifebox_ingest;
        -- Alarms are deduplicated with ON CONFLICT, which reads the conflict columns (0032).
        GRANT SELECT (device_id, code, raised_at) ON public.device_alarms TO lifebox_ingest;
        -- Upserted counts of unknown fields (INSERT ... ON CONFLICT DO UPDATE reads the row).
        GRANT SELECT, INSERT, UPDATE ON public.unknown_field_catalog TO lifebox_ingest;
        -- COPY cannot skip duplicates: a redelivered batch is COPied into a session temp table
        -- and merged with INSERT ... ON CONFLICT DO NOTHING.
        EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO lifebox_ingest', current_database());
        v_done := v_done || 'lifebox_ingest'::text;
    ELSE
        RAISE WARNING 'role lifebox_ingest does not exist: no grants made for it';
    END IF;
    RETURN 'granted: ' || coalesce(nullif(array_to_string(v_done, ', '), ''), 'nobody');
END
$$;

SELECT lifebox_apply_grants();
