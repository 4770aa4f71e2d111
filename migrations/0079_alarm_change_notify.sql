-- 0079 every committed alarm change is announced, so StreamAlarmEvents follows changes on the
-- serve process's one LISTEN connection (lifebox_grpc/streams) instead of polling the table
-- every 0.25 s per stream. One notice per (client, device) of each statement (the evaluator
-- writes a batch's raises and clears in one INSERT; acknowledgments one row): "client:device".
-- The notice is delivered at commit, so a stream never hears of a change it cannot read yet;
-- the stream then reads the changes as before (by recorded_at, with overlap, under its scope).

CREATE FUNCTION lifebox_notify_alarm_changes() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    PERFORM pg_notify('lifebox_alarm_changes', c.client_id::text || ':' || c.device_id::text)
    FROM (SELECT DISTINCT n.client_id, n.device_id FROM lifebox_new_changes n) c;
    RETURN NULL;
END
$$;

CREATE TRIGGER alarm_event_changes_notify
    AFTER INSERT ON alarm_event_changes
    REFERENCING NEW TABLE AS lifebox_new_changes
    FOR EACH STATEMENT
    EXECUTE FUNCTION lifebox_notify_alarm_changes();
