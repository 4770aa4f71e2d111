-- 0086 billing (issue 16): the ledger is the one source of truth for a client's balance, and a
-- client's suspension carries its reason.
--
-- * Every credit_transactions row is booked by a BEFORE INSERT trigger that locks the client's
--   row, checks the row books in the client's currency, adds a `completed` amount to
--   clients.balance (a `failed` row counts for nothing) and stamps balance_after with the
--   balance right after it, and booked_seq with the order of booking. Concurrent bookings on
--   one client serialize on that row lock, so clients.balance = sum(completed amounts) and
--   each balance_after holds, whoever inserts.
-- * clients.balance is written by that trigger alone: any other UPDATE that changes it is
--   refused (the trigger's own UPDATE runs one trigger level deeper).
-- * A row with an external reference (a payment, a renewal) is booked once per client and
--   kind; the trigger checks it under the lock, before the balance moves.
-- * A reversal (kind 'reversal' or 'refund' with reverses_id) points at a completed row of the
--   same client, has the opposite sign, and all reversals of a row together never exceed it.
-- * A payment in another currency books converted: original_amount/original_currency are what
--   was paid, exchange_rate_id/exchange_rate the rate used (the one in force at that time).
-- * clients.suspension_reason: 'billing' (automatic, lifted automatically when settled) or
--   'staff' (by hand; a payment never lifts it). A suspension without a stated reason is a
--   staff one; resuming clears it. client_status_events logs every status change with its
--   reason, actor and time, visible to staff.

ALTER TABLE credit_transactions
    ADD COLUMN original_amount numeric(20, 4),
    ADD COLUMN original_currency char(3) CHECK (original_currency ~ '^[A-Z]{3}$'),
    ADD COLUMN exchange_rate_id uuid REFERENCES exchange_rates (id) ON DELETE RESTRICT,
    ADD COLUMN exchange_rate numeric(24, 10) CHECK (exchange_rate > 0),
    ADD CONSTRAINT credit_transactions_conversion_check CHECK (
        (exchange_rate_id IS NULL) = (exchange_rate IS NULL)
        AND (exchange_rate_id IS NULL) = (original_amount IS NULL)
        AND (original_amount IS NULL) = (original_currency IS NULL)),
    ADD CONSTRAINT credit_transactions_reversal_check CHECK (
        (kind = 'reversal') <= (reverses_id IS NOT NULL));
-- The order rows were booked in: taken under the client's lock, so per client it is the
-- order of the balance (created_at is the transaction's start, equal within one).
CREATE SEQUENCE credit_transactions_booked_seq;
ALTER TABLE credit_transactions ADD COLUMN booked_seq bigint;
CREATE INDEX credit_transactions_reverses_idx ON credit_transactions (reverses_id)
    WHERE reverses_id IS NOT NULL;

CREATE FUNCTION lifebox_ledger_book() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_balance numeric(20, 4);
    v_currency char(3);
    v_original credit_transactions%ROWTYPE;
    v_reversed numeric(20, 4);
BEGIN
    SELECT balance, currency INTO v_balance, v_currency
    FROM clients WHERE id = NEW.client_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NEW;  -- not this transaction's client: row-level security or the key refuses it
    END IF;
    IF NEW.currency <> v_currency THEN
        RAISE EXCEPTION 'a ledger row books in the client''s currency %, not %',
            v_currency, NEW.currency USING ERRCODE = 'check_violation';
    END IF;
    -- Under the client's lock, so a retried payment can never be booked twice. Raised here,
    -- before the balance moves: an INSERT ... ON CONFLICT DO NOTHING would otherwise skip the
    -- row after this trigger had already changed the balance.
    IF NEW.external_ref IS NOT NULL AND EXISTS (
        SELECT 1 FROM credit_transactions WHERE client_id = NEW.client_id AND kind = NEW.kind
        AND external_ref = NEW.external_ref
    ) THEN
        RAISE EXCEPTION 'ledger row % % is already booked', NEW.kind, NEW.external_ref
            USING ERRCODE = 'unique_violation',
                  CONSTRAINT = 'credit_transactions_external_ref_key';
    END IF;
    IF NEW.reverses_id IS NOT NULL THEN
        SELECT * INTO v_original FROM credit_transactions WHERE id = NEW.reverses_id;
        IF NOT FOUND OR v_original.client_id <> NEW.client_id
           OR v_original.status <> 'completed' THEN
            RAISE EXCEPTION 'a reversal points at a completed row of the same client'
                USING ERRCODE = 'check_violation';
        END IF;
        IF sign(NEW.amount) = sign(v_original.amount) THEN
            RAISE EXCEPTION 'a reversal has the opposite sign of its original'
                USING ERRCODE = 'check_violation';
        END IF;
        SELECT coalesce(sum(amount), 0) INTO v_reversed FROM credit_transactions
        WHERE reverses_id = NEW.reverses_id AND status = 'completed';
        IF NEW.status = 'completed' AND abs(v_reversed + NEW.amount) > abs(v_original.amount) THEN
            RAISE EXCEPTION 'reversals would exceed the original amount'
                USING ERRCODE = 'check_violation';
        END IF;
    END IF;
    IF NEW.status = 'completed' THEN
        v_balance := v_balance + NEW.amount;
        UPDATE clients SET balance = v_balance WHERE id = NEW.client_id;
    END IF;
    NEW.balance_after := v_balance;
    NEW.booked_seq := nextval('credit_transactions_booked_seq');
    RETURN NEW;
END
$$;
CREATE TRIGGER credit_transactions_book BEFORE INSERT ON credit_transactions
    FOR EACH ROW EXECUTE FUNCTION lifebox_ledger_book();

ALTER TABLE clients
    ADD COLUMN suspension_reason text CHECK (suspension_reason IN ('billing', 'staff')),
    ADD COLUMN suspended_at timestamptz;
UPDATE clients SET suspension_reason = 'staff', suspended_at = updated_at
WHERE status = 'suspended';
ALTER TABLE clients ADD CONSTRAINT clients_suspension_state_check
    CHECK ((status = 'suspended') = (suspension_reason IS NOT NULL));

CREATE TABLE client_status_events (
    id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    client_id uuid NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    from_status text NOT NULL,
    to_status text NOT NULL,
    reason text,
    actor uuid,
    note text,
    at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX client_status_events_client_idx ON client_status_events (client_id, id);
SELECT lifebox_enable_tenant_rls('client_status_events');

CREATE FUNCTION lifebox_client_guard() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF NEW.balance IS DISTINCT FROM OLD.balance AND pg_trigger_depth() < 2 THEN
        RAISE EXCEPTION 'clients.balance changes only through the ledger (credit_transactions)'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NEW.status = 'suspended' AND OLD.status <> 'suspended' THEN
        NEW.suspension_reason := coalesce(NEW.suspension_reason, 'staff');
        NEW.suspended_at := now();
    ELSIF NEW.status = 'suspended' AND NEW.suspension_reason IS NULL THEN
        NEW.suspension_reason := OLD.suspension_reason;
    ELSIF NEW.status <> 'suspended' THEN
        NEW.suspension_reason := NULL;
        NEW.suspended_at := NULL;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER clients_guard BEFORE UPDATE ON clients
    FOR EACH ROW EXECUTE FUNCTION lifebox_client_guard();

CREATE FUNCTION lifebox_client_status_log() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF NEW.status IS DISTINCT FROM OLD.status
       OR NEW.suspension_reason IS DISTINCT FROM OLD.suspension_reason THEN
        INSERT INTO client_status_events (client_id, from_status, to_status, reason, actor, note)
        VALUES (NEW.id, OLD.status, NEW.status, NEW.suspension_reason,
                nullif(current_setting('lifebox.actor', true), '')::uuid,
                nullif(current_setting('lifebox.reason', true), ''));
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER clients_status_log AFTER UPDATE ON clients
    FOR EACH ROW EXECUTE FUNCTION lifebox_client_status_log();

INSERT INTO runtime_grants (grantee, privileges, relation, columns, why) VALUES
    ('lifebox_app', 'SELECT, INSERT', 'client_status_events', NULL,
     'append-only log, written by the clients trigger as the writing role');
SELECT lifebox_apply_grants();
