-- 0088 billing (issue 16): postpaid periods with an overdue state and frozen usage lines, and
-- the daily storage samples that `storage_gb_month` is metered from.
--
-- * postpaid_periods: open -> closed -> invoiced -> paid | void, and invoiced -> overdue ->
--   paid | void once due_at has passed (postpaid_status_transitions, enforced by a trigger).
--   Closing a period writes its usage lines (postpaid_period_lines) and totals in the same
--   transaction; lines are append-only for the application role and totals of a period that
--   is no longer open cannot change.
-- * storage_samples: one row per (client, table, day): the tenant's rows and the measured
--   average row size of that table that day. storage_gb_month of a period is the mean over
--   the period's sampled days of sum(rows x bytes) / 10^9.

ALTER TABLE postpaid_periods
    DROP CONSTRAINT postpaid_periods_status_check,
    ADD CONSTRAINT postpaid_periods_status_check
        CHECK (status IN ('open', 'closed', 'invoiced', 'overdue', 'paid', 'void')),
    ADD COLUMN due_at timestamptz,
    ADD COLUMN invoiced_at timestamptz,
    ADD COLUMN settled_at timestamptz,
    ADD CONSTRAINT postpaid_periods_due_check
        CHECK (status NOT IN ('invoiced', 'overdue') OR due_at IS NOT NULL);

CREATE TABLE postpaid_status_transitions (
    from_status text NOT NULL,
    to_status text NOT NULL,
    PRIMARY KEY (from_status, to_status)
);
SELECT lifebox_enable_global_rls('postpaid_status_transitions');
SELECT set_config('lifebox.staff', 'on', true);
INSERT INTO postpaid_status_transitions VALUES
    ('open', 'closed'), ('closed', 'invoiced'), ('invoiced', 'paid'), ('invoiced', 'void'),
    ('invoiced', 'overdue'), ('overdue', 'paid'), ('overdue', 'void');
SELECT set_config('lifebox.staff', 'off', true);

CREATE FUNCTION lifebox_postpaid_lifecycle() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.status <> 'open' THEN
            RAISE EXCEPTION 'a postpaid period starts open' USING ERRCODE = 'check_violation';
        END IF;
        RETURN NEW;
    END IF;
    IF NEW.status IS DISTINCT FROM OLD.status AND NOT EXISTS (
        SELECT 1 FROM postpaid_status_transitions
        WHERE from_status = OLD.status AND to_status = NEW.status
    ) THEN
        RAISE EXCEPTION 'postpaid period % cannot go from % to %', OLD.id, OLD.status, NEW.status
            USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.status = 'overdue' AND OLD.status <> 'overdue' AND NEW.due_at > now() THEN
        RAISE EXCEPTION 'period % is not past its due date', OLD.id
            USING ERRCODE = 'check_violation';
    END IF;
    IF OLD.status <> 'open' AND (NEW.subtotal, NEW.tax, NEW.total, NEW.currency,
                                 NEW.period_start, NEW.period_end)
        IS DISTINCT FROM (OLD.subtotal, OLD.tax, OLD.total, OLD.currency,
                          OLD.period_start, OLD.period_end) THEN
        RAISE EXCEPTION 'period % is closed: its totals are frozen', OLD.id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER postpaid_periods_lifecycle BEFORE INSERT OR UPDATE ON postpaid_periods
    FOR EACH ROW EXECUTE FUNCTION lifebox_postpaid_lifecycle();

CREATE TABLE postpaid_period_lines (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    client_id uuid NOT NULL REFERENCES clients (id) ON DELETE NO ACTION,
    period_id uuid NOT NULL REFERENCES postpaid_periods (id) ON DELETE NO ACTION,
    item text NOT NULL,
    quantity numeric(24, 6) NOT NULL CHECK (quantity >= 0),
    included numeric(24, 6) NOT NULL DEFAULT 0 CHECK (included >= 0),
    unit_price numeric(20, 4) NOT NULL CHECK (unit_price >= 0),
    amount numeric(20, 4) NOT NULL CHECK (amount >= 0),
    currency char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    UNIQUE (period_id, item)
);
SELECT lifebox_enable_tenant_rls('postpaid_period_lines');

CREATE TABLE storage_samples (
    client_id uuid NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    relation text NOT NULL,
    day date NOT NULL,
    row_count bigint NOT NULL CHECK (row_count >= 0),
    avg_row_bytes numeric(12, 2) NOT NULL CHECK (avg_row_bytes >= 0),
    sampled_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (client_id, relation, day)
);
SELECT lifebox_enable_tenant_rls('storage_samples');

INSERT INTO runtime_grants (grantee, privileges, relation, columns, why) VALUES
    ('lifebox_app', 'SELECT', 'postpaid_status_transitions', NULL, 'reference'),
    ('lifebox_app', 'SELECT, INSERT', 'postpaid_period_lines', NULL,
     'frozen when the period closes: append-only'),
    ('lifebox_app', 'SELECT', 'storage_samples', NULL,
     'written by `lifebox maintain` (owner) once a day, read for GetUsage');
SELECT lifebox_apply_grants();
