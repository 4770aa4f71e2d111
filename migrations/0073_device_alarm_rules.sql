-- 0073 alarm evaluation (issue 15): DEVICE_ALARM rules read the hardware alarms devices
-- report. The sweeper (an ingest worker under its lease) walks a device's alarms in time
-- order (a code is open from its raise until a `cleared` message or an API clear) and
-- raises while any open alarm has at least the rule's severity. It reads each alarm's
-- severity and clear time; ingest still never reads the message or payload.
-- alarm_rule_states.last_time is how far a DEVICE_ALARM rule's walk has gone on a device.
UPDATE runtime_grants
SET columns = '{device_id,code,raised_at,severity,cleared_at}'::text[],
    why = why || '; DEVICE_ALARM rules walk severities and clears (0073)'
WHERE grantee = 'lifebox_ingest' AND privileges = 'SELECT' AND relation = 'device_alarms';
SELECT lifebox_apply_grants();
