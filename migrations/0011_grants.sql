-- 0011 grants: exactly what each runtime role may do, in one function.
--
-- lifebox_app (serve): SELECT/INSERT/UPDATE/DELETE on what the API manages; append-only
-- tables (audit trails, the credit ledger, readings) get SELECT and INSERT only; reference
-- tables and ingest rejects are read-only, except role_permissions and exchange_rates, which
-- staff edit through the API (their row-level security lets only the staff path write). Never TRUNCATE, REFERENCES, TRIGGER or DDL.
-- Row-level security applies on top of every grant.
--
-- lifebox_ingest (ingest workers) bypasses row-level security (PostgreSQL refuses COPY FROM
-- under it), so its grants are the narrow list the ingest path needs and nothing more.
--
-- The roles are made by the embedded cluster's bootstrap; on an external database the
-- operator creates them (see docs/schema.md). A role missing at migration time is reported
-- with a WARNING and skipped; once it exists, `SELECT lifebox_apply_grants();` as the owner
-- grants it. Grants are only ever added (never revoked here), so re-running it is safe and
-- leaves the grants of later migrations alone.

CREATE FUNCTION lifebox_apply_grants() RETURNS text
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
        'calculation_formulas'];
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
        -- Acks move a command along its lifecycle.
        GRANT SELECT ON public.control_commands TO lifebox_ingest;
        GRANT UPDATE (status, sent_at, delivered_at, completed_at, result, error, updated_at)
            ON public.control_commands TO lifebox_ingest;
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
