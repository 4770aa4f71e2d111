-- 0091 billing (issue 16): card payments through Fawry without a card number ever reaching
-- LifeBox.
--
-- * A card is saved at Fawry, on Fawry's own pages (its hosted checkout or its card plugin/SDK),
--   under the customer profile id LifeBox gives Fawry (the client's id). LifeBox learns of it
--   only from Fawry's signed List Card Tokens API and keeps the token, last four digits and
--   brand in fawry_customer_data (0007), one row per (client, profile, token).
-- * fawry_charges gains the saved card a charge used (kept as last four and brand too, so the
--   payment's history survives the card's deletion) and the URL Fawry sent the payer to (its
--   hosted checkout, or a 3-D Secure step), which is all the API returns for them.

ALTER TABLE fawry_charges
    ADD COLUMN card_id uuid REFERENCES fawry_customer_data (id) ON DELETE SET NULL,
    ADD COLUMN card_last_four char(4) CHECK (card_last_four ~ '^[0-9]{4}$'),
    ADD COLUMN card_brand text CHECK (length(card_brand) <= 40),
    ADD COLUMN redirect_url text CHECK (length(redirect_url) <= 2000),
    ADD COLUMN checkout boolean NOT NULL DEFAULT false,
    ADD CONSTRAINT fawry_charges_card_method_check
        CHECK (card_id IS NULL OR payment_method = 'CARD');

-- A card's token is unique per profile; last four and brand are Fawry's word, refreshed.
CREATE INDEX fawry_customer_data_client_idx ON fawry_customer_data (client_id, created_at, id);
