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
-- * `lifebox_private_time_series_children()` (here) revokes every privilege of every role
--   but the owner on every child (chunks, compressed chunks, partitions, the default
--   partitions). A GRANT on a hypertable is applied to its chunks too, so
--   `lifebox_apply_grants()` ends by calling it (0042), and `lifebox maintain` calls it on
--   every pass.
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

-- The grants themselves move to column form in 0042 (grants as rows), which ends by calling
-- this; until then, close the children that exist now.
SELECT lifebox_private_time_series_children();
