-- 0010 time-series storage for telemetry_events, device_locations and device_data_points.
--
-- With the timescaledb extension installed (production images) the three tables are
-- hypertables with daily chunks, a retention policy and, where TimescaleDB allows it, a
-- compression policy segmented by device. TimescaleDB (up to at least 2.x) refuses
-- compression on tables with row-level security, and tenant isolation is not optional here:
-- when the ALTER is refused the tables stay uncompressed and a NOTICE says so.
--
-- Without it (the embedded cluster, Debian's postgresql-15-partman 4.7) the tables, created
-- PARTITION BY RANGE (time) in 0003/0004, get daily native partitions from pg_partman:
-- premade 7 days ahead, starting 35 days back (ingest accepts readings up to 30 days old;
-- anything outside the made range would land in the default partition), dropped after 90
-- days. infinite_time_partitions makes maintenance keep premaking ahead of now() even when
-- no new data arrives. Maintenance runs from pg_cron when it is installed in this database,
-- otherwise from `lifebox serve` (lifebox_grpc/store/partitions.py), which also applies the
-- telemetry_retention_days setting over the 90-day default written here.

DO $$
DECLARE
    v_tables text[] := ARRAY['telemetry_events', 'device_locations', 'device_data_points'];
    v_segment_by text[] := ARRAY['device_id', 'device_id', 'device_id, metric'];
    v_partman_schema name;
    v_start text := to_char(date_trunc('day', now() - interval '35 days'), 'YYYY-MM-DD');
    i integer;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        FOR i IN 1 .. array_length(v_tables, 1) LOOP
            PERFORM create_hypertable(
                format('public.%I', v_tables[i])::regclass, 'time',
                chunk_time_interval => interval '1 day', if_not_exists => true
            );
            BEGIN
                EXECUTE format(
                    'ALTER TABLE public.%I SET (timescaledb.compress, '
                    'timescaledb.compress_segmentby = %L, timescaledb.compress_orderby = %L)',
                    v_tables[i], v_segment_by[i], 'time DESC'
                );
                PERFORM add_compression_policy(
                    format('public.%I', v_tables[i])::regclass, interval '7 days',
                    if_not_exists => true
                );
            EXCEPTION WHEN OTHERS THEN
                RAISE NOTICE 'compression left off on %: % (row-level security wins)',
                    v_tables[i], SQLERRM;
            END;
            PERFORM add_retention_policy(
                format('public.%I', v_tables[i])::regclass, interval '90 days',
                if_not_exists => true
            );
        END LOOP;
        RETURN;
    END IF;

    SELECT extnamespace::regnamespace::name INTO v_partman_schema
        FROM pg_extension WHERE extname = 'pg_partman';
    IF v_partman_schema IS NULL THEN
        RAISE EXCEPTION 'time-series storage needs the timescaledb or the pg_partman extension'
            USING HINT = 'as a superuser: CREATE SCHEMA partman; '
                         'CREATE EXTENSION pg_partman SCHEMA partman;';
    END IF;
    FOR i IN 1 .. array_length(v_tables, 1) LOOP
        EXECUTE format(
            'SELECT %I.create_parent(p_parent_table => %L, p_control => %L, p_type => %L, '
            'p_interval => %L, p_premake => 7, p_start_partition => %L)',
            v_partman_schema, 'public.' || v_tables[i], 'time', 'native', 'daily', v_start
        );
        EXECUTE format(
            'UPDATE %I.part_config SET retention = %L, retention_keep_table = false, '
            'retention_keep_index = false, infinite_time_partitions = true '
            'WHERE parent_table = %L',
            v_partman_schema, '90 days', 'public.' || v_tables[i]
        );
    END LOOP;
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron') THEN
        EXECUTE format(
            'SELECT cron.schedule(%L, %L, %L)',
            'lifebox-partition-maintenance', '17 * * * *',
            format('CALL %I.run_maintenance_proc()', v_partman_schema)
        );
    END IF;
END
$$;
