-- 0001 foundation: the few functions every later migration leans on.
--
-- * lifebox_tenant_visible(client_id): THE row-level security predicate. A row is visible when
--   it belongs to the tenant named by the transaction-local setting `lifebox.client_id`, or
--   when the transaction runs on the explicit staff path (`lifebox.staff` = 'on'). With
--   neither set, nothing is visible. It is a plain SQL expression so the planner inlines it
--   and client_id indexes still serve tenant-scoped queries.
-- * lifebox_enable_tenant_rls(table): ENABLE + FORCE row-level security and the one policy,
--   so no tenant table is written with a hand-copied (and possibly wrong) policy.
-- * lifebox_enable_global_rls(table): reference tables shared by every tenant: readable by
--   all, writable only on the staff path.
-- * lifebox_touch_updated_at(): keeps updated_at honest on every UPDATE.
-- * lifebox_time_series_clause(): time-series tables are plain tables that become
--   TimescaleDB hypertables where that extension exists, and natively range-partitioned
--   tables (managed by pg_partman, see 0010) everywhere else.

CREATE FUNCTION lifebox_is_staff() RETURNS boolean
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT coalesce(current_setting('lifebox.staff', true), '') = 'on' $$;

COMMENT ON FUNCTION lifebox_is_staff() IS
    'True on the explicit cross-tenant path: set_config(''lifebox.staff'', ''on'', true), '
    'given only to platform staff principals (super_user, admin).';

CREATE FUNCTION lifebox_tenant_visible(p_client_id uuid) RETURNS boolean
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$
        SELECT coalesce(
            p_client_id = nullif(current_setting('lifebox.client_id', true), '')::uuid, false
        ) OR coalesce(current_setting('lifebox.staff', true), '') = 'on'
    $$;

COMMENT ON FUNCTION lifebox_tenant_visible(uuid) IS
    'Row-level security predicate of every tenant table: the row''s client is the '
    'transaction''s lifebox.client_id, or the transaction is on the staff path.';

CREATE FUNCTION lifebox_enable_tenant_rls(p_table regclass, p_column name DEFAULT 'client_id')
    RETURNS void
    LANGUAGE plpgsql
    AS $$
    BEGIN
        EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', p_table);
        -- FORCE: the owner (migrations, seeds, maintenance) obeys the policy too, so even
        -- owner-run code must say which tenant it acts for, or take the staff path.
        EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', p_table);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %s FOR ALL '
            'USING (lifebox_tenant_visible(%I)) WITH CHECK (lifebox_tenant_visible(%I))',
            p_table, p_column, p_column
        );
    END
    $$;

CREATE FUNCTION lifebox_enable_global_rls(p_table regclass) RETURNS void
    LANGUAGE plpgsql
    AS $$
    BEGIN
        EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', p_table);
        EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', p_table);
        -- Permissive policies are OR-ed: everyone reads, only staff insert/update/delete.
        EXECUTE format('CREATE POLICY global_read ON %s FOR SELECT USING (true)', p_table);
        EXECUTE format(
            'CREATE POLICY staff_write ON %s FOR ALL '
            'USING (lifebox_is_staff()) WITH CHECK (lifebox_is_staff())',
            p_table
        );
    END
    $$;

CREATE FUNCTION lifebox_touch_updated_at() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
    BEGIN
        NEW.updated_at := now();
        RETURN NEW;
    END
    $$;

CREATE FUNCTION lifebox_track_updates(p_table regclass) RETURNS void
    LANGUAGE plpgsql
    AS $$
    BEGIN
        EXECUTE format(
            'CREATE TRIGGER touch_updated_at BEFORE UPDATE ON %s '
            'FOR EACH ROW EXECUTE FUNCTION lifebox_touch_updated_at()',
            p_table
        );
    END
    $$;

CREATE FUNCTION lifebox_time_series_clause() RETURNS text
    LANGUAGE sql STABLE
    AS $$
        SELECT CASE
            WHEN EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN ''
            ELSE 'PARTITION BY RANGE (time)'
        END
    $$;

COMMENT ON FUNCTION lifebox_time_series_clause() IS
    'How a time-series table is created: plain (TimescaleDB turns it into a hypertable in '
    '0010) or PARTITION BY RANGE (time) (pg_partman manages daily partitions in 0010).';
