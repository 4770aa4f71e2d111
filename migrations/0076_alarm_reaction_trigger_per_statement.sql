-- 0076 the reaction trigger of 0075 runs once per statement instead of once per row: the
-- evaluator writes a batch's raises and clears with one INSERT ... SELECT from unnest(), and
-- the row trigger ran two queries on alarm_reactions for each of its rows, most of them for
-- rules without reactions (benchmarks/alarm_reactions.py). The transition table of the
-- statement's new rows is joined with the reactions once; behaviour is unchanged: one job per
-- (event, reaction, phase) and notify outcomes, in the statement's transaction.

DROP TRIGGER alarm_event_changes_reactions ON alarm_event_changes;
DROP FUNCTION lifebox_enqueue_alarm_reactions();

CREATE FUNCTION lifebox_enqueue_alarm_reactions() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_jobs integer;
BEGIN
    INSERT INTO alarm_reaction_jobs (client_id, event_id, reaction_id, rule_id, device_id,
                                     phase, kind)
    SELECT c.client_id, c.event_id, r.id, c.rule_id, c.device_id, c.phase, r.kind
    FROM (SELECT n.*, CASE n.change WHEN 'raised' THEN 'raise' ELSE 'clear' END AS phase
          FROM lifebox_new_changes n WHERE n.change IN ('raised', 'cleared')) c
    JOIN alarm_reactions r
      ON r.rule_id = c.rule_id AND r.client_id = c.client_id AND r.enabled
     AND r.kind <> 'notify' AND r.timing IN (c.phase, 'both')
    ON CONFLICT (event_id, reaction_id, phase) DO NOTHING;
    GET DIAGNOSTICS v_jobs = ROW_COUNT;
    INSERT INTO alarm_reaction_outcomes (client_id, event_id, reaction_id, phase, kind,
                                         outcome, reason)
    SELECT c.client_id, c.event_id, r.id, c.phase, 'notify', 'sent', 'shown on StreamAlarmEvents'
    FROM (SELECT n.*, CASE n.change WHEN 'raised' THEN 'raise' ELSE 'clear' END AS phase
          FROM lifebox_new_changes n WHERE n.change IN ('raised', 'cleared')) c
    JOIN alarm_reactions r
      ON r.rule_id = c.rule_id AND r.client_id = c.client_id AND r.enabled
     AND r.kind = 'notify' AND r.timing IN (c.phase, 'both');
    IF v_jobs > 0 THEN
        PERFORM pg_notify('lifebox_alarm_reactions', '');
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER alarm_event_changes_reactions
    AFTER INSERT ON alarm_event_changes
    REFERENCING NEW TABLE AS lifebox_new_changes
    FOR EACH STATEMENT
    EXECUTE FUNCTION lifebox_enqueue_alarm_reactions();
