-- 0092 billing (issue 16): VAT. A plan carries the VAT rate charged on top of what is billed
-- under it (Egypt's standard rate is 14 %: staff set tax_rate = 0.14; 0 means none, the
-- default, so a plan made before this migration bills as it did).
--
-- * Prepaid: every charge under a plan (period fee, metered usage, prorated plan change) is
--   followed by its own ledger row of kind 'tax', VAT = amount x rate rounded half up to the
--   cent, booked once under the charge's reference + ':vat' (a credit's VAT is credited).
-- * Postpaid: a closed period freezes subtotal (sum of its lines), tax_rate, tax (subtotal x
--   rate, half up to the cent) and total = subtotal + tax; its invoice is one 'charge' row of
--   the total. Voiding it reverses that row, VAT included.
-- Money stays numeric(20,4); rates are numeric(6,4).

ALTER TABLE plans
    ADD COLUMN tax_rate numeric(6, 4) NOT NULL DEFAULT 0
        CHECK (tax_rate >= 0 AND tax_rate < 1);

ALTER TABLE postpaid_periods
    ADD COLUMN tax_rate numeric(6, 4) NOT NULL DEFAULT 0
        CHECK (tax_rate >= 0 AND tax_rate < 1),
    ADD CONSTRAINT postpaid_periods_total_check
        CHECK (status = 'open' OR total = subtotal + tax);

ALTER TABLE credit_transactions
    DROP CONSTRAINT credit_transactions_kind_check,
    ADD CONSTRAINT credit_transactions_kind_check
        CHECK (kind IN ('topup', 'charge', 'refund', 'adjustment', 'subscription', 'usage',
                        'reversal', 'tax'));

-- A closed period's rate is frozen with its totals (0088's rule, with tax_rate).
CREATE OR REPLACE FUNCTION lifebox_postpaid_lifecycle() RETURNS trigger
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
    IF OLD.status <> 'open' AND (NEW.subtotal, NEW.tax, NEW.tax_rate, NEW.total, NEW.currency,
                                 NEW.period_start, NEW.period_end)
        IS DISTINCT FROM (OLD.subtotal, OLD.tax, OLD.tax_rate, OLD.total, OLD.currency,
                          OLD.period_start, OLD.period_end) THEN
        RAISE EXCEPTION 'period % is closed: its totals are frozen', OLD.id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;
