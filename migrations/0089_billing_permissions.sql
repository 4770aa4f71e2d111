-- 0089 billing (issue 16): who holds the billing permissions. billing.read (a tenant's
-- subscription, usage, prices, ledger, charges) and billing.pay (start a Fawry payment) are
-- held by tenant administrators and staff; billing.write (plans, prices, rates, subscriptions,
-- adjustments, refunds) by staff alone. These are the catalogue's defaults
-- (store/command_catalogue.py), which `lifebox seed` gives a permission the first time it sees
-- it; on a database whose roles are already seeded this grants them now.

SELECT set_config('lifebox.staff', 'on', true);
INSERT INTO role_permissions (role, permission)
SELECT r.name, p.permission FROM roles r,
    (VALUES ('billing.read', ARRAY['super_user', 'admin', 'client']),
            ('billing.pay', ARRAY['super_user', 'admin', 'client']),
            ('billing.write', ARRAY['super_user', 'admin'])) AS p (permission, holders)
WHERE r.name = ANY (p.holders)
ON CONFLICT DO NOTHING;
SELECT set_config('lifebox.staff', '', true);
