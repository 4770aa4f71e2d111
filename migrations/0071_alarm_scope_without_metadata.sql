-- 0071 alarm rules (issue 15): ingest learns whether a device's metadata contains a rule's
-- filter without reading any metadata, and a rule's scope is read from its target columns.
--
-- 0070 let the ingest role read devices.metadata to match metadata-scoped rules; the
-- runtime roles' least privilege says it must not (tests/test_rls.py). It now asks
-- lifebox_device_metadata_contains(device, filter), which answers only that boolean.
-- 0070's generated `scope` column goes: tables are copied row for row by the isolation
-- matrix, and the scope is already what the target columns say (alarms/conditions.py).

ALTER TABLE alarm_rules DROP COLUMN scope;

-- It answers the ingest role about any device, and any other caller only about devices of
-- the tenant its transaction is scoped to (so it is no oracle over other tenants' metadata).
CREATE FUNCTION lifebox_device_metadata_contains(p_device_id uuid, p_filter jsonb)
    RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public
    AS $$
DECLARE
    -- The owner obeys row-level security (FORCE): the staff path for this one statement,
    -- then the caller's setting again (as lifebox_broker_device, 0046); the WHERE clause is
    -- the scope instead.
    v_staff text := current_setting('lifebox.staff', true);
    v_client uuid := nullif(current_setting('lifebox.client_id', true), '')::uuid;
    v_found boolean;
BEGIN
    PERFORM set_config('lifebox.staff', 'on', true);
    SELECT d.metadata @> p_filter INTO v_found FROM public.devices d
    WHERE d.id = p_device_id AND (session_user = 'lifebox_ingest' OR d.client_id = v_client);
    PERFORM set_config('lifebox.staff', coalesce(v_staff, ''), true);
    RETURN coalesce(v_found, false);
END
$$;

UPDATE runtime_grants
SET columns = array_remove(columns, 'metadata'),
    why = replace(why, 'alarm rules scope devices by type and metadata (0070)',
                  'alarm rules scope devices by type (0070; metadata: 0071)')
WHERE grantee = 'lifebox_ingest' AND privileges = 'SELECT' AND relation = 'devices';
SELECT lifebox_apply_grants();
