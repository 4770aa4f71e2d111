-- 0021 role permission writes: UpdateRolePermissions (super_user only, on the staff path)
-- edits role_permissions, which 0011 grants the application role read-only. Row-level
-- security (lifebox_enable_global_rls: writes only with lifebox.staff = 'on') still applies.
GRANT INSERT, DELETE ON role_permissions TO lifebox_app;
