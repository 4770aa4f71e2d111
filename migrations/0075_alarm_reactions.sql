-- 0075 alarm reactions (issue 15): what a rule does when one of its events is raised or
-- cleared, done at least once and recorded per event.
--
-- A reaction runs on raise, on clear, or both (timing). The raise or clear of an event is the
-- row ingest inserts into alarm_event_changes; a trigger on that table enqueues one job per
-- reaction that applies, in the same transaction, so a reaction exists exactly when its
-- change committed (nothing in the evaluator changes, and a crash can neither lose nor
-- double one: UNIQUE (event, reaction, phase)). `lifebox reactions` claims due jobs
-- (FOR UPDATE SKIP LOCKED), runs them and records every attempt's outcome: sent, failed (for
-- good), retried (will run again, with backoff) or skipped (and why: owner_missing,
-- endpoint_failing...). A job's id is the delivery id receivers deduplicate on: a worker
-- killed after sending and before recording sends it again (at least once).
--
-- notify reactions need no delivery: the trigger records them as sent with the change, and
-- StreamAlarmEvents shows them with it.
--
-- Webhooks are signed with one secret per rule (alarm_rule_webhook_secrets), made when the
-- rule first gets a webhook and returned once by the API; no API response reads it back.

ALTER TABLE alarm_reactions
    ADD COLUMN timing text NOT NULL DEFAULT 'raise' CHECK (timing IN ('raise', 'clear', 'both')),
    -- email reactions: the recipients.
    ADD COLUMN email_to text[] NOT NULL DEFAULT '{}' CHECK (cardinality(email_to) <= 10),
    ADD CONSTRAINT alarm_reactions_email_to CHECK (kind <> 'email' OR cardinality(email_to) > 0),
    ADD CONSTRAINT alarm_reactions_url_length CHECK (length(webhook_url) <= 2000);

CREATE TABLE alarm_rule_webhook_secrets (
    rule_id uuid PRIMARY KEY,
    client_id uuid NOT NULL,
    -- HMAC-SHA256 key of the rule's webhook bodies.
    secret bytea NOT NULL CHECK (length(secret) = 32),
    created_at timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (rule_id, client_id) REFERENCES alarm_rules (id, client_id) ON DELETE CASCADE
);
CREATE INDEX alarm_rule_webhook_secrets_client_idx ON alarm_rule_webhook_secrets (client_id);
SELECT lifebox_enable_tenant_rls('alarm_rule_webhook_secrets');

-- The outbox: one job per (event, reaction, phase); done once it is sent, failed or skipped.
CREATE TABLE alarm_reaction_jobs (
    -- The delivery id (webhook header X-LifeBox-Delivery, command idempotency key).
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    client_id uuid NOT NULL,
    event_id uuid NOT NULL,
    reaction_id uuid NOT NULL,
    rule_id uuid NOT NULL,
    device_id uuid NOT NULL,
    phase text NOT NULL CHECK (phase IN ('raise', 'clear')),
    kind text NOT NULL CHECK (kind IN ('command', 'webhook', 'email')),
    attempts integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    due_at timestamptz NOT NULL DEFAULT now(),
    done_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (event_id, reaction_id, phase),
    FOREIGN KEY (event_id, client_id) REFERENCES alarm_events (id, client_id) ON DELETE CASCADE,
    -- A reaction removed from its rule runs no more.
    FOREIGN KEY (reaction_id) REFERENCES alarm_reactions (id) ON DELETE CASCADE
);
CREATE INDEX alarm_reaction_jobs_due_idx ON alarm_reaction_jobs (due_at) WHERE done_at IS NULL;
CREATE INDEX alarm_reaction_jobs_client_idx ON alarm_reaction_jobs (client_id);
CREATE INDEX alarm_reaction_jobs_reaction_idx ON alarm_reaction_jobs (reaction_id);
SELECT lifebox_enable_tenant_rls('alarm_reaction_jobs');

-- Every attempt's outcome, per event (kept when the reaction is removed from its rule).
CREATE TABLE alarm_reaction_outcomes (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    client_id uuid NOT NULL,
    event_id uuid NOT NULL,
    reaction_id uuid NOT NULL,
    job_id uuid,
    phase text NOT NULL CHECK (phase IN ('raise', 'clear')),
    kind text NOT NULL CHECK (kind IN ('command', 'webhook', 'email', 'notify')),
    outcome text NOT NULL CHECK (outcome IN ('sent', 'failed', 'retried', 'skipped')),
    reason text NOT NULL DEFAULT '' CHECK (length(reason) <= 500),
    attempt integer NOT NULL DEFAULT 1,
    -- command reactions: the command created.
    command_id uuid,
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    FOREIGN KEY (event_id, client_id) REFERENCES alarm_events (id, client_id) ON DELETE CASCADE
);
CREATE INDEX alarm_reaction_outcomes_event_idx ON alarm_reaction_outcomes (event_id, recorded_at);
CREATE INDEX alarm_reaction_outcomes_client_idx ON alarm_reaction_outcomes (client_id);
SELECT lifebox_enable_tenant_rls('alarm_reaction_outcomes');

-- Webhook endpoints that keep failing: after N consecutive failures the reaction is failing
-- and its jobs are tried at most every LIFEBOX_REACTIONS_FAILING_RETRY_MINUTES; a success
-- resets it.
CREATE TABLE alarm_webhook_health (
    reaction_id uuid PRIMARY KEY REFERENCES alarm_reactions (id) ON DELETE CASCADE,
    client_id uuid NOT NULL,
    consecutive_failures integer NOT NULL DEFAULT 0 CHECK (consecutive_failures >= 0),
    failing_since timestamptz,
    next_attempt_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX alarm_webhook_health_client_idx ON alarm_webhook_health (client_id);
SELECT lifebox_enable_tenant_rls('alarm_webhook_health');

-- Enqueue the reactions of a raise or a clear, as the inserting role, in its transaction.
CREATE FUNCTION lifebox_enqueue_alarm_reactions() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_phase text := CASE NEW.change WHEN 'raised' THEN 'raise' ELSE 'clear' END;
    v_jobs integer;
BEGIN
    INSERT INTO alarm_reaction_jobs (client_id, event_id, reaction_id, rule_id, device_id,
                                     phase, kind)
    SELECT NEW.client_id, NEW.event_id, r.id, NEW.rule_id, NEW.device_id, v_phase, r.kind
    FROM alarm_reactions r
    WHERE r.rule_id = NEW.rule_id AND r.client_id = NEW.client_id AND r.enabled
      AND r.kind <> 'notify' AND r.timing IN (v_phase, 'both')
    ON CONFLICT (event_id, reaction_id, phase) DO NOTHING;
    GET DIAGNOSTICS v_jobs = ROW_COUNT;
    INSERT INTO alarm_reaction_outcomes (client_id, event_id, reaction_id, phase, kind,
                                         outcome, reason)
    SELECT NEW.client_id, NEW.event_id, r.id, v_phase, 'notify', 'sent',
           'shown on StreamAlarmEvents'
    FROM alarm_reactions r
    WHERE r.rule_id = NEW.rule_id AND r.client_id = NEW.client_id AND r.enabled
      AND r.kind = 'notify' AND r.timing IN (v_phase, 'both');
    IF v_jobs > 0 THEN
        PERFORM pg_notify('lifebox_alarm_reactions', '');
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER alarm_event_changes_reactions
    AFTER INSERT ON alarm_event_changes
    FOR EACH ROW WHEN (NEW.change IN ('raised', 'cleared'))
    EXECUTE FUNCTION lifebox_enqueue_alarm_reactions();

-- Ingest raises and clears (the trigger runs as it): it reads which reactions apply and
-- enqueues them, never their parameters, URLs or secrets. The API writes reactions and the
-- secret (returned once), reads outcomes; `lifebox reactions` (on the app role, see
-- README "### Reactions") claims jobs and records outcomes.
INSERT INTO runtime_grants (grantee, privileges, relation, columns, why) VALUES
    ('lifebox_ingest', 'SELECT', 'alarm_reactions', '{id,client_id,rule_id,kind,timing,enabled}',
     'the trigger on alarm_event_changes enqueues the reactions of a raise or clear (0075)'),
    ('lifebox_ingest', 'INSERT', 'alarm_reaction_jobs', NULL, 'enqueued with the change'),
    ('lifebox_ingest', 'SELECT', 'alarm_reaction_jobs', '{event_id,reaction_id,phase}',
     'ON CONFLICT (event_id, reaction_id, phase) DO NOTHING reads the conflict target'),
    ('lifebox_ingest', 'INSERT', 'alarm_reaction_outcomes', NULL, 'notify: sent with the change'),
    ('lifebox_app', 'SELECT, INSERT, UPDATE, DELETE', 'alarm_rule_webhook_secrets', NULL,
     'made with the rule''s first webhook; the reaction worker signs with it'),
    ('lifebox_app', 'SELECT, INSERT, UPDATE', 'alarm_reaction_jobs', NULL,
     'the trigger enqueues (changes written by the API); the worker claims and finishes'),
    ('lifebox_app', 'SELECT, INSERT', 'alarm_reaction_outcomes', NULL, 'append-only'),
    ('lifebox_app', 'SELECT, INSERT, UPDATE', 'alarm_webhook_health', NULL, NULL);
SELECT lifebox_apply_grants();
