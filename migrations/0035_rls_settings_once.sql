-- 0035 row-level security reads the tenant settings once per statement, not once per row.
--
-- Every policy used to call lifebox_tenant_visible(client_id) / lifebox_is_staff(), which the
-- planner inlines into an expression evaluated for each row: two current_setting() lookups
-- and a text-to-uuid parse per row. Over a device-day of readings (43,200 rows) that was
-- about 40 % of an hourly aggregate's time. Written with scalar sub-selects, the settings
-- become InitPlans, computed once when the statement first needs them, and the comparison
-- per row is a plain uuid equality.
--
-- The meaning is unchanged, NULLs included: a row is visible when its client is
-- `lifebox.client_id`, or on the staff path (`lifebox.staff` = 'on'); with neither set,
-- nothing is. coalesce() keeps the predicate true or false, never NULL, as before.
--
-- Every existing policy is rewritten in place (names, commands and roles kept), the two
-- helpers that make policies for new tables now write the new form, and
-- lifebox_tenant_visible() goes, so that there is one spelling of the predicate.

-- Every policy is altered in this one transaction, which locks each of their tables: on a
-- busy database, give up (and let the operator retry) rather than queue every query behind
-- a long one.
SET LOCAL lock_timeout = '30s';

CREATE FUNCTION lifebox_current_client_id() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT nullif(current_setting('lifebox.client_id', true), '')::uuid $$;

COMMENT ON FUNCTION lifebox_current_client_id() IS
    'The tenant of this transaction (set_config(''lifebox.client_id'', ..., true)), or NULL.';

-- The policy predicate for rows whose tenant is in p_column (an identifier, quoted here).
CREATE FUNCTION lifebox_tenant_predicate(p_column name) RETURNS text
    LANGUAGE sql IMMUTABLE
    AS $$
        SELECT format(
            '(coalesce(%I = (SELECT lifebox_current_client_id()), false) '
            'OR (SELECT lifebox_is_staff()))',
            p_column
        )
    $$;

CREATE OR REPLACE FUNCTION lifebox_enable_tenant_rls(
    p_table regclass, p_column name DEFAULT 'client_id'
) RETURNS void
    LANGUAGE plpgsql
    AS $$
    BEGIN
        EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', p_table);
        -- FORCE: the owner (migrations, seeds, maintenance) obeys the policy too, so even
        -- owner-run code must say which tenant it acts for, or take the staff path.
        EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', p_table);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %s FOR ALL USING %s WITH CHECK %s',
            p_table, lifebox_tenant_predicate(p_column), lifebox_tenant_predicate(p_column)
        );
    END
    $$;

CREATE OR REPLACE FUNCTION lifebox_enable_global_rls(p_table regclass) RETURNS void
    LANGUAGE plpgsql
    AS $$
    BEGIN
        EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', p_table);
        EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', p_table);
        -- Permissive policies are OR-ed: everyone reads, only staff insert/update/delete.
        EXECUTE format('CREATE POLICY global_read ON %s FOR SELECT USING (true)', p_table);
        EXECUTE format(
            'CREATE POLICY staff_write ON %s FOR ALL '
            'USING ((SELECT lifebox_is_staff())) WITH CHECK ((SELECT lifebox_is_staff()))',
            p_table
        );
    END
    $$;

DO $$
DECLARE
    v_policy record;
    v_using text;
    v_check text;
BEGIN
    FOR v_policy IN
        SELECT p.polname, p.polrelid::regclass AS rel,
               pg_get_expr(p.polqual, p.polrelid) AS qual,
               pg_get_expr(p.polwithcheck, p.polrelid) AS with_check
        FROM pg_policy p
        JOIN pg_class c ON c.oid = p.polrelid
        WHERE c.relnamespace = 'public'::regnamespace
    LOOP
        v_using := v_policy.qual;
        v_check := v_policy.with_check;
        -- Staff first, so the sub-selects the tenant rewrite adds are not wrapped twice.
        v_using := regexp_replace(v_using, 'lifebox_is_staff\(\)', '(SELECT lifebox_is_staff())', 'g');
        v_check := regexp_replace(v_check, 'lifebox_is_staff\(\)', '(SELECT lifebox_is_staff())', 'g');
        -- Any other spelling of the call is left alone, and the DROP at the end then fails
        -- loudly instead of leaving a policy on a dropped function.
        v_using := regexp_replace(
            v_using, 'lifebox_tenant_visible\(([a-z_][a-z0-9_]*)\)',
            '(coalesce(\1 = (SELECT lifebox_current_client_id()), false) '
            'OR (SELECT lifebox_is_staff()))', 'g');
        v_check := regexp_replace(
            v_check, 'lifebox_tenant_visible\(([a-z_][a-z0-9_]*)\)',
            '(coalesce(\1 = (SELECT lifebox_current_client_id()), false) '
            'OR (SELECT lifebox_is_staff()))', 'g');
        IF v_using IS DISTINCT FROM v_policy.qual THEN
            EXECUTE format('ALTER POLICY %I ON %s USING (%s)', v_policy.polname, v_policy.rel, v_using);
        END IF;
        IF v_check IS DISTINCT FROM v_policy.with_check THEN
            EXECUTE format('ALTER POLICY %I ON %s WITH CHECK (%s)', v_policy.polname, v_policy.rel, v_check);
        END IF;
    END LOOP;
END
$$;

DROP FUNCTION lifebox_tenant_visible(uuid);

-- TimescaleDB: a parallel ChunkAppend whose chunk filter reads an InitPlan value can return
-- no rows at all (timescale/timescaledb#10503, fixed in releases after the 2.17 line, the last
-- for PostgreSQL 15). The policies above put InitPlan values in every chunk's filter, so
-- parallel ChunkAppend is turned off for this database where the extension exists (other
-- parallel plans stay on).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        EXECUTE format(
            'ALTER DATABASE %I SET timescaledb.enable_parallel_chunk_append = off',
            current_database()
        );
    END IF;
END
$$;
