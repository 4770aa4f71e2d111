-- 0087 billing (issue 16): the charges LifeBox creates at Fawry, and webhook dedupe among
-- verified notifications only.
--
-- * fawry_charges is what LifeBox asked Fawry for: our merchant reference (unique), Fawry's
--   reference number, method, amount and currency. A notification is checked against it and
--   against Fawry's status query before anything is credited. Its status moves forward only
--   (NEW -> PAID -> PARTIAL_REFUNDED -> REFUNDED; NEW -> CANCELED | EXPIRED | FAILED), enforced
--   by a trigger, so a late or replayed older status can never move it back.
-- * fawry_payment_notifications were unique on (fawry_ref_number, order_status) for every row,
--   so a forged notification with a bad signature, stored first, blocked the genuine one. The
--   key now covers verified notifications alone; every notification is still stored.

CREATE FUNCTION lifebox_fawry_status_rank(p_status text) RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
        SELECT CASE p_status
            WHEN 'NEW' THEN 0 WHEN 'PAID' THEN 1 WHEN 'PARTIAL_REFUNDED' THEN 2
            WHEN 'REFUNDED' THEN 3 WHEN 'CANCELED' THEN 1 WHEN 'EXPIRED' THEN 1
            WHEN 'FAILED' THEN 1 END
    $$;

CREATE TABLE fawry_charges (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    client_id uuid NOT NULL REFERENCES clients (id) ON DELETE NO ACTION,
    merchant_ref_number text NOT NULL UNIQUE CHECK (merchant_ref_number ~ '^[A-Za-z0-9_-]{6,64}$'),
    fawry_ref_number text UNIQUE,
    payment_method text NOT NULL CHECK (payment_method IN ('PAYATFAWRY', 'CARD')),
    amount numeric(20, 4) NOT NULL CHECK (amount > 0),
    currency char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    status text NOT NULL DEFAULT 'NEW' CHECK (status IN (
        'NEW', 'PAID', 'CANCELED', 'REFUNDED', 'EXPIRED', 'PARTIAL_REFUNDED', 'FAILED')),
    paid_amount numeric(20, 4),
    refunded_amount numeric(20, 4) NOT NULL DEFAULT 0 CHECK (refunded_amount >= 0),
    customer_profile_id text NOT NULL,
    description text,
    expires_at timestamptz,
    -- The ledger row that booked the payment (set once, when PAID is confirmed).
    credit_transaction_id uuid REFERENCES credit_transactions (id) ON DELETE NO ACTION,
    created_by uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK (paid_amount IS NULL OR refunded_amount <= paid_amount)
);
CREATE INDEX fawry_charges_client_idx ON fawry_charges (client_id, created_at DESC, id);
SELECT lifebox_enable_tenant_rls('fawry_charges');
SELECT lifebox_track_updates('fawry_charges');

CREATE FUNCTION lifebox_fawry_charge_forward() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF NEW.status IS DISTINCT FROM OLD.status AND (
        lifebox_fawry_status_rank(NEW.status) <= lifebox_fawry_status_rank(OLD.status)
        OR OLD.status IN ('CANCELED', 'EXPIRED', 'FAILED', 'REFUNDED')
        OR (NEW.status IN ('PARTIAL_REFUNDED', 'REFUNDED') AND OLD.status = 'NEW')
    ) THEN
        RAISE EXCEPTION 'charge % cannot go from % to %', OLD.id, OLD.status, NEW.status
            USING ERRCODE = 'check_violation';
    END IF;
    IF OLD.credit_transaction_id IS NOT NULL
       AND NEW.credit_transaction_id IS DISTINCT FROM OLD.credit_transaction_id THEN
        RAISE EXCEPTION 'charge % is already booked', OLD.id USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER fawry_charges_forward BEFORE UPDATE ON fawry_charges
    FOR EACH ROW EXECUTE FUNCTION lifebox_fawry_charge_forward();

ALTER TABLE fawry_payment_notifications
    DROP CONSTRAINT fawry_payment_notifications_ref_status_key,
    ADD COLUMN charge_id uuid REFERENCES fawry_charges (id) ON DELETE NO ACTION,
    ADD COLUMN outcome text;
-- Fawry retries a notification: among verified ones, the same (reference, status) is one event.
CREATE UNIQUE INDEX fawry_payment_notifications_verified_key
    ON fawry_payment_notifications (fawry_ref_number, order_status) WHERE signature_valid;

INSERT INTO runtime_grants (grantee, privileges, relation, columns, why) VALUES
    ('lifebox_app', 'SELECT, INSERT, UPDATE', 'fawry_charges', NULL,
     'created by the API, moved forward by the webhook; never deleted (money history)');
SELECT lifebox_apply_grants();
