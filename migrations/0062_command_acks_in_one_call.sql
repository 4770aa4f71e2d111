-- 0062 ingest applies a batch's command acks in one call (issue 14): the same rule as the
-- per-ack statement it replaces (an ack counts only for an unfinished command of the same
-- device and tenant; the status only moves forward; each move is one command_executions row
-- in the transaction), looped in the server in the order the acks arrived, so a batch with
-- "received" then "completed" for one command records both steps, and a batch costs one
-- round trip instead of one per ack. Runs as the caller, with ingest's own column grants.
-- Returns the 1-based positions of the acks that matched no unfinished command.
CREATE FUNCTION lifebox_apply_command_acks(
    p_ids uuid[], p_devices uuid[], p_clients uuid[], p_statuses text[], p_results jsonb[],
    p_device_times timestamptz[]
) RETURNS SETOF integer
    LANGUAGE plpgsql
    SET search_path = pg_catalog, public
    AS $$
DECLARE
    v_order constant text[] := ARRAY['pending', 'sent', 'delivered', 'acknowledged', 'completed',
                                     'failed'];
    v_status text;
    v_next text;
BEGIN
    FOR i IN 1 .. coalesce(array_length(p_ids, 1), 0) LOOP
        SELECT status INTO v_status FROM control_commands
        WHERE id = p_ids[i] AND device_id = p_devices[i] AND client_id = p_clients[i]
          AND status NOT IN ('completed', 'failed', 'expired', 'cancelled')
        FOR UPDATE;
        IF NOT FOUND THEN
            RETURN NEXT i;
            CONTINUE;
        END IF;
        INSERT INTO command_acknowledgments (client_id, command_id, status, result, device_time)
        VALUES (p_clients[i], p_ids[i], p_statuses[i], p_results[i], p_device_times[i]);
        v_next := CASE p_statuses[i]
            WHEN 'received' THEN 'delivered'
            WHEN 'accepted' THEN 'acknowledged'
            WHEN 'rejected' THEN 'failed'
            ELSE p_statuses[i] END;
        IF array_position(v_order, v_next) > array_position(v_order, v_status) THEN
            UPDATE control_commands SET
                status = v_next,
                delivered_at = coalesce(delivered_at, now()),
                completed_at = CASE WHEN v_next IN ('completed', 'failed') THEN now()
                                    ELSE completed_at END,
                result = coalesce(p_results[i], result),
                updated_at = now()
            WHERE id = p_ids[i];
            INSERT INTO command_executions (client_id, command_id, from_status, to_status,
                                            actor_kind, detail)
            VALUES (p_clients[i], p_ids[i], v_status, v_next, 'device',
                    jsonb_build_object('ack', p_statuses[i]));
        END IF;
    END LOOP;
END
$$;
-- EXECUTE stays with PUBLIC (PostgreSQL's default): the function runs as its caller and can do
-- only what the caller's own grants allow, so it needs no grant of its own (and
-- lifebox_apply_grants() has none to rebuild).
