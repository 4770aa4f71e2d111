-- 0085 billing (issue 16): a plan catalogue, and subscriptions whose lifecycle the database
-- enforces with an audit row for every change.
--
-- * plans is reference data shared by every tenant (global RLS: all read, staff write). A
--   subscription copies the plan's price, currency, interval and quota when it starts or
--   changes plan (the seed's columns), so editing the catalogue never reprices a running
--   period; plan_id says where they came from.
-- * subscription_status_transitions is the lifecycle as data: exactly trialing -> active,
--   active -> past_due, past_due -> active, trialing|active|past_due -> cancelled and
--   active|past_due -> expired. A trigger refuses any other status change, and a new
--   subscription starts trialing or active.
-- * subscription_events is the audit trail, written by a trigger in the same statement as the
--   change (so no change can exist without its row): creation, status, plan, scheduled
--   cancellation and renewal. Who and why come from the transaction-local settings
--   lifebox.actor (a user id; empty: the system, e.g. `lifebox maintain`) and lifebox.reason.

CREATE TABLE plans (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    code text NOT NULL UNIQUE CHECK (code ~ '^[a-z][a-z0-9_-]{1,63}$'),
    name text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    billing_interval text NOT NULL DEFAULT 'month' CHECK (billing_interval IN ('month', 'year')),
    price numeric(20, 4) NOT NULL CHECK (price >= 0),
    currency char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    device_quota integer NOT NULL CHECK (device_quota >= 0),
    -- item -> quantity included per period before customer pricing applies, as decimal strings
    -- ({"million_readings": "5"}).
    included_usage jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(included_usage) = 'object'),
    active boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
SELECT lifebox_enable_global_rls('plans');
SELECT lifebox_track_updates('plans');

ALTER TABLE subscriptions
    ADD COLUMN plan_id uuid REFERENCES plans (id) ON DELETE RESTRICT,
    ADD COLUMN cancel_at_period_end boolean NOT NULL DEFAULT false,
    ADD COLUMN past_due_since timestamptz,
    ADD COLUMN ended_at timestamptz,
    ADD CONSTRAINT subscriptions_past_due_since_check
        CHECK ((status = 'past_due') = (past_due_since IS NOT NULL));

CREATE TABLE subscription_status_transitions (
    from_status text NOT NULL,
    to_status text NOT NULL,
    meaning text NOT NULL,
    PRIMARY KEY (from_status, to_status)
);
SELECT lifebox_enable_global_rls('subscription_status_transitions');

SELECT set_config('lifebox.staff', 'on', true);
INSERT INTO subscription_status_transitions (from_status, to_status, meaning) VALUES
    ('trialing', 'active', 'the trial ended and the first period was charged'),
    ('active', 'past_due', 'a renewal charge left the balance below the credit limit'),
    ('past_due', 'active', 'paid: the balance is back within the credit limit'),
    ('trialing', 'cancelled', 'cancelled (now, or at the end of the trial)'),
    ('active', 'cancelled', 'cancelled (now, or at the end of the period)'),
    ('past_due', 'cancelled', 'cancelled while unpaid'),
    ('active', 'expired', 'the period ended without automatic renewal'),
    ('past_due', 'expired', 'the period ended without automatic renewal, unpaid');
SELECT set_config('lifebox.staff', 'off', true);

CREATE TABLE subscription_events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    client_id uuid NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    subscription_id uuid NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    kind text NOT NULL
        CHECK (kind IN ('created', 'status', 'plan_changed', 'cancel_scheduled', 'renewed')),
    from_status text,
    to_status text NOT NULL,
    from_plan text,
    to_plan text NOT NULL,
    period_start timestamptz NOT NULL,
    period_end timestamptz NOT NULL,
    actor uuid,
    reason text,
    at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX subscription_events_subscription_idx ON subscription_events (subscription_id, id);
CREATE INDEX subscription_events_client_idx ON subscription_events (client_id, id);
SELECT lifebox_enable_tenant_rls('subscription_events');

CREATE FUNCTION lifebox_subscription_lifecycle() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.status NOT IN ('trialing', 'active') THEN
            RAISE EXCEPTION 'a subscription starts trialing or active, not %', NEW.status
                USING ERRCODE = 'check_violation';
        END IF;
    ELSIF NEW.status IS DISTINCT FROM OLD.status AND NOT EXISTS (
        SELECT 1 FROM subscription_status_transitions
        WHERE from_status = OLD.status AND to_status = NEW.status
    ) THEN
        RAISE EXCEPTION 'subscription % cannot go from % to %', OLD.id, OLD.status, NEW.status
            USING ERRCODE = 'check_violation';
    ELSIF OLD.status IN ('cancelled', 'expired') THEN
        RAISE EXCEPTION 'subscription % has ended', OLD.id USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER subscriptions_lifecycle BEFORE INSERT OR UPDATE ON subscriptions
    FOR EACH ROW EXECUTE FUNCTION lifebox_subscription_lifecycle();

CREATE FUNCTION lifebox_subscription_audit() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_kind text;
BEGIN
    IF TG_OP = 'INSERT' THEN
        v_kind := 'created';
    ELSIF NEW.status IS DISTINCT FROM OLD.status THEN
        v_kind := 'status';
    ELSIF NEW.plan IS DISTINCT FROM OLD.plan OR NEW.plan_id IS DISTINCT FROM OLD.plan_id THEN
        v_kind := 'plan_changed';
    ELSIF NEW.current_period_start IS DISTINCT FROM OLD.current_period_start THEN
        v_kind := 'renewed';
    ELSIF NEW.cancel_at_period_end IS DISTINCT FROM OLD.cancel_at_period_end THEN
        v_kind := 'cancel_scheduled';
    ELSE
        RETURN NULL;  -- nothing the trail records (e.g. only updated_at)
    END IF;
    INSERT INTO subscription_events (
        client_id, subscription_id, kind, from_status, to_status, from_plan, to_plan,
        period_start, period_end, actor, reason)
    VALUES (
        NEW.client_id, NEW.id, v_kind,
        CASE WHEN TG_OP = 'UPDATE' THEN OLD.status END, NEW.status,
        CASE WHEN TG_OP = 'UPDATE' THEN OLD.plan END, NEW.plan,
        NEW.current_period_start, NEW.current_period_end,
        nullif(current_setting('lifebox.actor', true), '')::uuid,
        nullif(current_setting('lifebox.reason', true), ''));
    RETURN NULL;
END
$$;
CREATE TRIGGER subscriptions_audit AFTER INSERT OR UPDATE ON subscriptions
    FOR EACH ROW EXECUTE FUNCTION lifebox_subscription_audit();

INSERT INTO runtime_grants (grantee, privileges, relation, columns, why) VALUES
    ('lifebox_app', 'SELECT, INSERT, UPDATE', 'plans', NULL,
     'the catalogue: staff write (global RLS), everyone reads; plans retire, never deleted'),
    ('lifebox_app', 'SELECT', 'subscription_status_transitions', NULL, 'reference'),
    ('lifebox_app', 'SELECT, INSERT', 'subscription_events', NULL,
     'append-only audit trail, written by the subscriptions trigger as the writing role');
SELECT lifebox_apply_grants();
