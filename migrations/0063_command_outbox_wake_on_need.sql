-- 0063 dispatchers are woken only when there may be something to publish (issue 14).
-- 0060 notified lifebox_command_outbox after every INSERT and every DELETE on the outbox. An
-- insert is a new job; a delete (its command delivered or final) matters only when the same
-- device has another job waiting behind it (one command in flight per device): otherwise the
-- wake-up cost every dispatcher an empty claim transaction, one per acknowledged command.
-- Inserts keep the statement-level notification; a delete notifies once per statement, and
-- only when a device it released still has a job.

DROP TRIGGER command_outbox_notify ON command_outbox;

CREATE TRIGGER command_outbox_notify
    AFTER INSERT ON command_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION lifebox_command_outbox_notify();

-- Runs inside lifebox_command_outbox_release (SECURITY DEFINER, on the staff path) or as a
-- DELETE's own caller; SECURITY DEFINER on the staff path here too, so it sees every job of
-- the released devices whoever deletes.
CREATE FUNCTION lifebox_command_outbox_notify_released() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, public
    AS $$
DECLARE
    v_staff text := current_setting('lifebox.staff', true);
    v_waiting boolean;
BEGIN
    PERFORM set_config('lifebox.staff', 'on', true);
    v_waiting := EXISTS (
        SELECT 1 FROM command_outbox o
        WHERE o.device_id IN (SELECT DISTINCT device_id FROM released));
    PERFORM set_config('lifebox.staff', coalesce(v_staff, ''), true);
    IF v_waiting THEN
        PERFORM pg_notify('lifebox_command_outbox', '');
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER command_outbox_notify_released
    AFTER DELETE ON command_outbox
    REFERENCING OLD TABLE AS released
    FOR EACH STATEMENT EXECUTE FUNCTION lifebox_command_outbox_notify_released();
