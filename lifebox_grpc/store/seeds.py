"""Reference data (`lifebox seed`) and the demo tenant (`lifebox seed --demo`). Idempotent.

Seeds run as the owner, which obeys row-level security too (it is FORCEd), so every seed runs
on the explicit staff path.
"""

from __future__ import annotations

import json

import asyncpg

from lifebox_grpc.store.command_catalogue import (
    ALL_PERMISSIONS,
    COMMAND_PERMISSIONS,
    COMMAND_TEMPLATES,
    DEFAULT_ROLE_PERMISSIONS,
    ROLES,
)
from lifebox_grpc.store.pool import tenant_transaction

DEMO_SLUG = "demo"
DEMO_EMAIL_DOMAIN = "demo.lifebox.local"
DEMO_ROLES = ("admin", "client", "operator", "viewer")
DEMO_DEVICES = (
    ("DEMO-0001", "Main feeder meter", "energy_meter"),
    ("DEMO-0002", "Cold room sensor", "environment_sensor"),
    ("DEMO-0003", "Pump controller", "relay_controller"),
    ("DEMO-0004", "Rooftop air quality", "air_quality_sensor"),
    ("DEMO-0005", "Generator tracker", "gps_tracker"),
)

_UPSERT_ROLE = """
INSERT INTO roles (name, description, is_platform_staff, rank) VALUES ($1, $2, $3, $4)
ON CONFLICT (name) DO UPDATE SET description = EXCLUDED.description,
    is_platform_staff = EXCLUDED.is_platform_staff, rank = EXCLUDED.rank
"""

_GRANT = """
INSERT INTO role_permissions (role, permission) VALUES ($1, $2)
ON CONFLICT DO NOTHING
"""

_UPSERT_COMMAND_PERMISSION = """
INSERT INTO command_permissions (code, name, description, category, risk_level,
                                 requires_confirmation)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (code) DO UPDATE SET name = EXCLUDED.name, description = EXCLUDED.description,
    category = EXCLUDED.category, risk_level = EXCLUDED.risk_level,
    requires_confirmation = EXCLUDED.requires_confirmation
"""

# Global templates (client_id NULL); the code decides, so edits in the catalogue take effect.
_UPSERT_TEMPLATE = """
INSERT INTO command_templates (client_id, code, name, description, command_permission,
                               parameters_schema, default_parameters, timeout_s, max_retries)
VALUES (NULL, $1, $2, $3, $4, $5::jsonb, $6::jsonb, $7, $8)
ON CONFLICT (client_id, code) DO UPDATE SET name = EXCLUDED.name,
    description = EXCLUDED.description, command_permission = EXCLUDED.command_permission,
    parameters_schema = EXCLUDED.parameters_schema,
    default_parameters = EXCLUDED.default_parameters, timeout_s = EXCLUDED.timeout_s,
    max_retries = EXCLUDED.max_retries
"""


async def seed_reference(conn: asyncpg.Connection) -> str:
    """Roles, permissions, command permissions and templates. Returns a one-line report.

    Roles, command permissions and global templates are brought to what the catalogue says.
    Role permissions are only added: a permission new to the database goes to its default
    roles, and super_user always holds every permission; who else holds a known permission
    is data that staff may have changed, and is left alone.
    """
    async with tenant_transaction(conn, None, staff=True):
        await conn.executemany(
            _UPSERT_ROLE, [(r.name, r.description, r.is_platform_staff, r.rank) for r in ROLES]
        )
        known = {
            r["permission"] for r in await conn.fetch("SELECT permission FROM role_permissions")
        }
        grants = [
            (role, permission)
            for role, permissions in DEFAULT_ROLE_PERMISSIONS.items()
            for permission in permissions
            if permission not in known
        ]
        grants += [("super_user", permission) for permission in ALL_PERMISSIONS]
        await conn.executemany(_GRANT, grants)
        await conn.executemany(
            _UPSERT_COMMAND_PERMISSION,
            [
                (p.code, p.name, p.description, p.category, p.risk_level, p.requires_confirmation)
                for p in COMMAND_PERMISSIONS
            ],
        )
        await conn.executemany(
            _UPSERT_TEMPLATE,
            [
                (
                    t.code,
                    t.name,
                    t.description,
                    t.permission,
                    json.dumps(t.parameters),
                    json.dumps(t.defaults),
                    t.timeout_s,
                    t.max_retries,
                )
                for t in COMMAND_TEMPLATES
            ],
        )
    return (
        f"reference data: {len(ROLES)} roles, {len(ALL_PERMISSIONS)} permissions, "
        f"{len(COMMAND_PERMISSIONS)} command permissions, {len(COMMAND_TEMPLATES)} templates"
    )


async def seed_demo(conn: asyncpg.Connection, password_hash: str) -> str:
    """A demo client with one user per role and a handful of devices.

    Users are ``<role>@demo.lifebox.local`` sharing ``password_hash``; ``admin`` is platform
    staff (no client), the others belong to the demo client. Existing rows are left as they
    are, so a second run changes nothing (and never resets a changed password).
    """
    async with tenant_transaction(conn, None, staff=True):
        client_id = await conn.fetchval(
            "INSERT INTO clients (name, slug, billing_mode, currency, balance) "
            "VALUES ('Demo', $1, 'prepaid', 'EGP', 1000) "
            "ON CONFLICT (slug) DO UPDATE SET slug = EXCLUDED.slug RETURNING id",
            DEMO_SLUG,
        )
        users = {}
        for role in DEMO_ROLES:
            email = f"{role}@{DEMO_EMAIL_DOMAIN}"
            await conn.execute(
                "INSERT INTO users (client_id, email, password_hash, role, display_name) "
                "VALUES ($1, $2, $3, $4, $5) ON CONFLICT ((lower(email))) DO NOTHING",
                None if role in ("super_user", "admin") else client_id,
                email,
                password_hash,
                role,
                f"Demo {role}",
            )
            users[role] = await conn.fetchval(
                "SELECT id FROM users WHERE lower(email) = lower($1)", email
            )
        await conn.executemany(
            "INSERT INTO devices (client_id, serial, name, device_type, status) "
            "VALUES ($1, $2, $3, $4, 'active') ON CONFLICT (serial) DO NOTHING",
            [(client_id, serial, name, kind) for serial, name, kind in DEMO_DEVICES],
        )
        # Operators and viewers see only assigned devices: give each the first three.
        await conn.execute(
            """
            INSERT INTO user_device_assignments (client_id, user_id, device_id, access_level)
            SELECT d.client_id, u.id, d.id,
                   CASE u.role WHEN 'operator' THEN 'operate' ELSE 'view' END
            FROM devices d, users u
            WHERE d.serial = ANY($1::text[]) AND u.id = ANY($2::uuid[])
              AND d.client_id = u.client_id
            ON CONFLICT (user_id, device_id) DO NOTHING
            """,
            [serial for serial, _, _ in DEMO_DEVICES[:3]],
            [users["operator"], users["viewer"]],
        )
    return (
        f"demo data: client {DEMO_SLUG!r}, users {', '.join(DEMO_ROLES)}@{DEMO_EMAIL_DOMAIN}, "
        f"devices {DEMO_DEVICES[0][0]}…{DEMO_DEVICES[-1][0]}"
    )


async def ensure_platform_admin(conn: asyncpg.Connection, email: str, password_hash: str) -> bool:
    """Create the first super_user if there is none; True when it was created.

    Only a super_user counts: the demo's staff ``admin`` must not stop the real first admin
    from being made. An e-mail already taken by another user is left alone (False).
    """
    async with tenant_transaction(conn, None, staff=True):
        # Two `lifebox dev` starts at once must not both create "the first" admin.
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('lifebox.first_admin'))")
        if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM users WHERE role = 'super_user')"):
            return False
        created = await conn.fetchval(
            "INSERT INTO users (client_id, email, password_hash, role, display_name) "
            "VALUES (NULL, $1, $2, 'super_user', 'Platform admin') "
            "ON CONFLICT ((lower(email))) DO NOTHING RETURNING true",
            email,
            password_hash,
        )
        return bool(created)
