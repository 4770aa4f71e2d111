-- 0036 no runtime role reaches a chunk or partition except through its parent table.
--
-- Row-level security lives on the parent (telemetry_events, device_locations,
-- device_data_points); PostgreSQL applies it to a partition or a TimescaleDB chunk only when
-- the row is reached through the parent. Read directly, a child has no policy at all. On
-- pg_partman the partitions carry no grants, so a direct read is refused; TimescaleDB copies
-- the hypertable's grants down to every chunk (at chunk creation, and again on every GRANT on
-- the hypertable), so `lifebox_app` could read every tenant's readings through
-- `_timescaledb_internal._hyper_*_chunk` (reproduced on PostgreSQL 15.20 + TimescaleDB 2.28.3).
--
-- Two rules close it, for the chunks that exist and the chunks ingest makes every day:
-- * The runtime roles hold their privileges on the three parents as column privileges.
--   TimescaleDB copies only the table-level ACL (pg_class.relacl) to a new chunk, so a chunk
--   made later starts with the owner's privileges alone. A query or COPY through the parent
--   needs no privilege on the chunk (checked: SELECT, INSERT, COPY and chunk creation by the
--   ingest role, retention jobs).
-- * `lifebox_private_time_series_children()` revokes every privilege of every role but the
--   owner on every child (chunks, compressed chunks, partitions, the default partitions).
--   A GRANT on a hypertable is applied to its chunks too, so `lifebox_apply_grants()` ends
--   by calling it, and `lifebox maintain` calls it on every pass.
-- A migration that adds a column to one of the three tables must end with
-- `SELECT lifebox_apply_grants();` (column privileges name the columns that exist).
-- Revoking USAGE on `_timescaledb_internal` instead is no fix: TimescaleDB then refuses even
-- queries through the hypertable (tried).

CREATE OR REPLACE FUNCTION lifebox_private_time_series_children() RETURNS integer
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_parents regclass[] := ARRAY[
        'public.telemetry_events', 'public.device_locations', 'public.device_data_points'
    ]::regclass[];
    v_child record;
    v_count integer := 0;
BEGIN
    FOR v_child IN
        WITH RECURSIVE tree(relid) AS (
            SELECT inhrelid FROM pg_inherits WHERE inhparent = ANY (v_parents)
            UNION
            SELECT i.inhrelid FROM pg_inherits i JOIN tree t ON i.inhparent = t.relid
        ),
        -- TimescaleDB keeps compressed chunks and their hypertables in its internal schema,
        -- not under the parent; every table of ours there holds tenant rows.
        internal(relid) AS (
            SELECT c.oid FROM pg_class c
            WHERE c.relnamespace = to_regnamespace('_timescaledb_internal')
              AND c.relkind IN ('r', 'p')
              AND c.relowner = (SELECT oid FROM pg_roles WHERE rolname = current_user)
        ),
        children AS (SELECT relid FROM tree UNION SELECT relid FROM internal)
        SELECT ch.relid::regclass AS rel,
               array_agg(DISTINCT g.grantee) FILTER (WHERE g.grantee IS NOT NULL) AS grantees
        FROM children ch
        JOIN pg_class c ON c.oid = ch.relid
        LEFT JOIN LATERAL (
            SELECT a.grantee FROM aclexplode(c.relacl) a
            UNION
            SELECT a.grantee FROM pg_attribute att, aclexplode(att.attacl) a
            WHERE att.attrelid = c.oid
        ) g ON g.grantee <> c.relowner
        GROUP BY ch.relid
    LOOP
        IF v_child.grantees IS NULL THEN
            CONTINUE;
        END IF;
        -- Revoking a table privilege revokes the same privilege on each column as well.
        EXECUTE format(
            'REVOKE ALL ON TABLE %s FROM %s', v_child.rel,
            (SELECT string_agg(CASE WHEN r = 0 THEN 'PUBLIC' ELSE quote_ident(r::regrole::text) END,
                               ', ')
             FROM unnest(v_child.grantees) r)
        );
        v_count := v_count + 1;
    END LOOP;
    RETURN v_count;
END
$$;

-- Every current column of a table, for column privileges. Each privilege of a GRANT takes
-- its own column list (`SELECT, INSERT (a)` would grant SELECT on the whole table). SELECT
-- also covers the system column xmin: live streams select a commit's rows by it.
CREATE OR REPLACE FUNCTION lifebox_grant_columns(
    p_privileges text[], p_table regclass, p_role name
) RETURNS void
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_columns text := (
        SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute
        WHERE attrelid = p_table AND attnum > 0 AND NOT attisdropped
    );
BEGIN
    EXECUTE format(
        'GRANT %s ON TABLE %s TO %I',
        (SELECT string_agg(
             format('%s (%s%s)', p, v_columns, CASE WHEN p = 'SELECT' THEN ', xmin' END), ', ')
         FROM unnest(p_privileges) p),
        p_table, p_role
    );
END
$$;

-- 0034's grant set, with the three time-series parents granted by column and their children
-- made private at the end. device_data_points joins the append-only tables (nothing updates
-- or deletes a computed point; DELETE has no column form).
CREATE OR REPLACE FUNCTION lifebox_apply_grants() RETURNS text
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_crud text[] := ARRAY[
        'clients', 'users', 'password_reset_tokens', 'refresh_tokens', 'role_permissions',
        'devices', 'device_metadata_snapshots', 'user_device_assignments', 'device_alarms',
        'unknown_field_catalog',
        'command_templates', 'control_commands', 'user_command_permissions',
        'alarm_rules', 'alarm_events', 'alarm_reactions',
        'subscriptions', 'customer_pricing', 'postpaid_periods', 'fawry_customer_data',
        'exchange_rates',
        'quick_view_pages', 'quick_view_page_devices', 'quick_view_page_command_templates',
        'quick_view_page_shares', 'files', 'widgets', 'dashboard_layouts',
        'calculation_formulas', 'auth_rate_limits'];
    v_append_only text[] := ARRAY[
        'device_metadata_history', 'command_executions', 'command_acknowledgments',
        'alarm_acknowledgments', 'credit_transactions'];
    v_time_series text[] := ARRAY['telemetry_events', 'device_locations', 'device_data_points'];
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
        FOREACH v_table IN ARRAY v_time_series LOOP
            EXECUTE format('REVOKE ALL ON public.%I FROM lifebox_app', v_table);
            PERFORM lifebox_grant_columns(ARRAY['SELECT', 'INSERT'], format('public.%I', v_table),
                                          'lifebox_app');
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
        GRANT INSERT ON public.ingest_rejects, public.device_alarms,
            public.command_acknowledgments, public.command_executions TO lifebox_ingest;
        REVOKE ALL ON public.telemetry_events FROM lifebox_ingest;
        PERFORM lifebox_grant_columns(ARRAY['INSERT'], 'public.telemetry_events', 'lifebox_ingest');
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
    PERFORM lifebox_private_time_series_children();
    RETURN 'granted: ' || coalesce(nullif(array_to_string(v_done, ', '), ''), 'nobody');
END
$$;

SELECT lifebox_apply_grants();
