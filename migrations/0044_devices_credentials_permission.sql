-- 0044 devices.credentials (issue 13): creating, rotating and revoking a device's broker
-- credential is a permission of its own, no longer part of devices.update (metadata). A
-- secret lets a device speak for itself on the broker, which a viewer's MANAGE assignment
-- for editing metadata should not imply.
--
-- Held by default by the tenant administrator (client), platform staff (admin, super_user)
-- and operators, who use it only on devices assigned to them with MANAGE
-- (auth/permissions.py DEVICE_ACTIONS); viewers do not hold it. These are the catalogue's
-- defaults (store/command_catalogue.py), which `lifebox seed` gives a permission the first
-- time it sees it: on a database whose roles are already seeded this migration grants them
-- now, on a fresh one (no roles yet) it grants nothing and the seed does. Who holds it
-- afterwards is data (UpdateRolePermissions).

SELECT set_config('lifebox.staff', 'on', true);  -- role_permissions is written on the staff path
INSERT INTO role_permissions (role, permission)
SELECT name, 'devices.credentials' FROM roles
WHERE name IN ('super_user', 'admin', 'client', 'operator')
ON CONFLICT DO NOTHING;
SELECT set_config('lifebox.staff', '', true);
