-- 0007 billing: subscriptions, per-client pricing, postpaid periods, the credit ledger, Fawry
-- payment notifications and stored customer data, exchange rates.
--
-- Money is numeric(20,4) beside a char(3) ISO 4217 code, never float. Financial records
-- (postpaid_periods, credit_transactions, fawry_payment_notifications) reference their client
-- with NO ACTION: a client with money history cannot be deleted, only closed. The ledger is
-- append-only (the application role gets INSERT and SELECT only): a correction is a new row.
-- Card data is a gateway token plus last four digits and brand, never a card number.

CREATE TABLE subscriptions (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- A subscription is tenant configuration; charges live in the ledger, which restricts.
    client_id uuid NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    plan text NOT NULL,
    status text NOT NULL DEFAULT 'active'
        CHECK (status IN ('trialing', 'active', 'past_due', 'cancelled', 'expired')),
    billing_interval text NOT NULL DEFAULT 'month' CHECK (billing_interval IN ('month', 'year')),
    current_period_start timestamptz NOT NULL,
    current_period_end timestamptz NOT NULL,
    device_quota integer NOT NULL CHECK (device_quota >= 0),
    price numeric(20, 4) NOT NULL CHECK (price >= 0),
    currency char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    auto_renew boolean NOT NULL DEFAULT true,
    cancelled_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK (current_period_end > current_period_start)
);
-- One live subscription per client.
CREATE UNIQUE INDEX subscriptions_one_live_key ON subscriptions (client_id)
    WHERE status IN ('trialing', 'active', 'past_due');
CREATE INDEX subscriptions_period_end_idx ON subscriptions (current_period_end)
    WHERE status IN ('trialing', 'active', 'past_due');
SELECT lifebox_enable_tenant_rls('subscriptions');
SELECT lifebox_track_updates('subscriptions');

CREATE TABLE customer_pricing (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    client_id uuid NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    item text NOT NULL CHECK (item ~ '^[a-z][a-z0-9_]{1,63}$'),
    unit_price numeric(20, 4) NOT NULL CHECK (unit_price >= 0),
    currency char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    valid_from timestamptz NOT NULL DEFAULT now(),
    valid_to timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK (valid_to IS NULL OR valid_to > valid_from),
    UNIQUE (client_id, item, valid_from)
);
SELECT lifebox_enable_tenant_rls('customer_pricing');

CREATE TABLE postpaid_periods (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    client_id uuid NOT NULL REFERENCES clients (id) ON DELETE NO ACTION,
    period_start timestamptz NOT NULL,
    period_end timestamptz NOT NULL,
    status text NOT NULL DEFAULT 'open'
        CHECK (status IN ('open', 'closed', 'invoiced', 'paid', 'void')),
    subtotal numeric(20, 4) NOT NULL DEFAULT 0,
    tax numeric(20, 4) NOT NULL DEFAULT 0,
    total numeric(20, 4) NOT NULL DEFAULT 0,
    currency char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    invoice_ref text,
    closed_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK (period_end > period_start),
    UNIQUE (client_id, period_start)
);
SELECT lifebox_enable_tenant_rls('postpaid_periods');
SELECT lifebox_track_updates('postpaid_periods');

CREATE TABLE fawry_payment_notifications (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- NULL until the merchant reference is matched to a client (visible to staff only).
    client_id uuid REFERENCES clients (id) ON DELETE NO ACTION,
    raw_body text NOT NULL,
    fawry_ref_number text NOT NULL,
    merchant_ref_number text,
    order_status text NOT NULL,
    order_amount numeric(20, 4),
    payment_amount numeric(20, 4),
    fawry_fees numeric(20, 4),
    currency char(3) NOT NULL DEFAULT 'EGP' CHECK (currency ~ '^[A-Z]{3}$'),
    payment_method text,
    signature_valid boolean NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    processed_at timestamptz,
    processing_error text,
    -- Fawry retries a notification: the same (reference, status) is the same event.
    CONSTRAINT fawry_payment_notifications_ref_status_key
        UNIQUE (fawry_ref_number, order_status)
);
CREATE INDEX fawry_payment_notifications_merchant_idx
    ON fawry_payment_notifications (merchant_ref_number);
CREATE INDEX fawry_payment_notifications_client_idx
    ON fawry_payment_notifications (client_id, received_at DESC);
CREATE INDEX fawry_payment_notifications_unprocessed_idx
    ON fawry_payment_notifications (received_at) WHERE processed_at IS NULL;
SELECT lifebox_enable_tenant_rls('fawry_payment_notifications');

CREATE TABLE credit_transactions (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    client_id uuid NOT NULL REFERENCES clients (id) ON DELETE NO ACTION,
    -- Signed: credits positive, charges negative.
    amount numeric(20, 4) NOT NULL CHECK (amount <> 0),
    currency char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    kind text NOT NULL
        CHECK (kind IN ('topup', 'charge', 'refund', 'adjustment', 'subscription', 'usage',
                        'reversal')),
    -- Rows are final when written; a reversal is a new row pointing at the original.
    status text NOT NULL DEFAULT 'completed' CHECK (status IN ('completed', 'failed')),
    external_ref text,
    balance_after numeric(20, 4),
    description text,
    reverses_id uuid REFERENCES credit_transactions (id) ON DELETE NO ACTION,
    postpaid_period_id uuid REFERENCES postpaid_periods (id) ON DELETE NO ACTION,
    fawry_notification_id uuid
        REFERENCES fawry_payment_notifications (id) ON DELETE NO ACTION,
    created_by uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
-- A payment reference is booked once per client and kind (webhook retries are harmless).
CREATE UNIQUE INDEX credit_transactions_external_ref_key
    ON credit_transactions (client_id, kind, external_ref) WHERE external_ref IS NOT NULL;
CREATE INDEX credit_transactions_client_idx ON credit_transactions (client_id, created_at DESC);
SELECT lifebox_enable_tenant_rls('credit_transactions');

CREATE TABLE fawry_customer_data (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    client_id uuid NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    -- The paying user, if any; the profile stays with the client when the user goes.
    user_id uuid REFERENCES users (id) ON DELETE SET NULL,
    customer_profile_id text NOT NULL,
    name text,
    mobile text,
    email text,
    card_token text,
    card_last_four char(4) CHECK (card_last_four ~ '^[0-9]{4}$'),
    card_brand text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((card_token IS NULL) = (card_last_four IS NULL)),
    CONSTRAINT fawry_customer_data_card_key
        UNIQUE NULLS NOT DISTINCT (client_id, customer_profile_id, card_token)
);
SELECT lifebox_enable_tenant_rls('fawry_customer_data');
SELECT lifebox_track_updates('fawry_customer_data');

CREATE TABLE exchange_rates (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    base char(3) NOT NULL CHECK (base ~ '^[A-Z]{3}$'),
    quote char(3) NOT NULL CHECK (quote ~ '^[A-Z]{3}$'),
    rate numeric(24, 10) NOT NULL CHECK (rate > 0),
    as_of timestamptz NOT NULL,
    source text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK (base <> quote),
    UNIQUE (base, quote, as_of, source)
);
CREATE INDEX exchange_rates_pair_idx ON exchange_rates (base, quote, as_of DESC);
SELECT lifebox_enable_global_rls('exchange_rates');
