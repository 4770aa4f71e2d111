-- 0072 lifebox_device_metadata_contains (0071) is a definer's-rights function: only the roles
-- that evaluate alarm rules call it (the ingest workers, and the API's TestAlarmRule dry
-- run), not PUBLIC (tests/test_broker_database_authn.py: a clustered broker's role may call
-- no definer's-rights function but its own lookup). Function grants become runtime_grants
-- rows too (privileges 'EXECUTE', relation = the function's signature), so that
-- lifebox_apply_grants() rebuilds them like every other grant; this is 0042's function with
-- that one branch added.

REVOKE EXECUTE ON FUNCTION lifebox_device_metadata_contains(uuid, jsonb) FROM PUBLIC;

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
            IF v_rule.privileges = 'EXECUTE' THEN  -- relation names a function (0072)
                EXECUTE format('GRANT EXECUTE ON FUNCTION public.%s TO %I',
                               v_rule.relation, v_role);
            ELSIF v_rule.columns IS NULL THEN
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

INSERT INTO runtime_grants (grantee, privileges, relation, columns, why) VALUES
    ('lifebox_ingest', 'EXECUTE', 'lifebox_device_metadata_contains(uuid, jsonb)', NULL,
     'alarm rules scoped by device metadata: a yes/no answer, never the metadata (0071)'),
    ('lifebox_app', 'EXECUTE', 'lifebox_device_metadata_contains(uuid, jsonb)', NULL,
     'TestAlarmRule replays a metadata-scoped rule (only the tenant''s own devices)');
SELECT lifebox_apply_grants();
