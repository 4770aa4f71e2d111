"""Seeds: idempotent reference data, 28+ templates with parameter schemas, the demo tenant."""

from __future__ import annotations

import json

import asyncpg

from lifebox_grpc.store import seeds
from lifebox_grpc.store.command_catalogue import COMMAND_TEMPLATES
from lifebox_grpc.store.pool import tenant_transaction
from tests.helpers.scratch_db import scratch_database
from tests.helpers.services import Database

_TABLES = (
    "roles",
    "role_permissions",
    "command_permissions",
    "command_templates",
    "clients",
    "users",
    "devices",
    "user_device_assignments",
)


async def _counts(conn: asyncpg.Connection) -> dict[str, int]:
    async with tenant_transaction(conn, None, staff=True):
        return {t: int(await conn.fetchval(f"SELECT count(*) FROM {t}")) for t in _TABLES}


async def test_seeding_twice_changes_nothing(database: Database) -> None:
    async with scratch_database(database, migrate=True) as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            await seeds.seed_reference(conn)
            await seeds.seed_demo(conn, "hash")
            first = await _counts(conn)
            await seeds.seed_reference(conn)
            await seeds.seed_demo(conn, "other-hash")
            assert await _counts(conn) == first
            assert first["roles"] == 5
            assert first["command_templates"] >= 28
        finally:
            await conn.close()


async def test_every_template_has_an_object_schema_for_its_parameters(
    owner_conn: asyncpg.Connection,
) -> None:
    async with tenant_transaction(owner_conn, None, staff=True):
        rows = await owner_conn.fetch(
            "SELECT code, parameters_schema, default_parameters FROM command_templates "
            "WHERE client_id IS NULL"
        )
    assert len(rows) >= 28
    assert {r["code"] for r in rows} >= {
        "reboot",
        "set_relay",
        "set_reporting_interval",
        "firmware_update",
        "sync_time",
    }
    for row in rows:
        schema = json.loads(row["parameters_schema"])
        assert isinstance(schema, dict), row["code"]
        assert schema["type"] == "object", row["code"]
        assert isinstance(schema["properties"], dict), row["code"]
        assert set(schema["required"]) <= set(schema["properties"]), row["code"]
        defaults = json.loads(row["default_parameters"])
        assert set(defaults) <= set(schema["properties"]), row["code"]


def test_template_codes_are_unique() -> None:
    codes = [t.code for t in COMMAND_TEMPLATES]
    assert len(codes) == len(set(codes))


async def test_role_permissions_changed_by_staff_survive_a_reseed(database: Database) -> None:
    async with scratch_database(database, migrate=True, seed=True) as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            async with tenant_transaction(conn, None, staff=True):
                await conn.execute(
                    "DELETE FROM role_permissions WHERE role = 'viewer' "
                    "AND permission = 'files.read'"
                )
            await seeds.seed_reference(conn)
            async with tenant_transaction(conn, None, staff=True):
                viewer = {
                    r["permission"]
                    for r in await conn.fetch(
                        "SELECT permission FROM role_permissions WHERE role = 'viewer'"
                    )
                }
                missing_for_super = await conn.fetchval(
                    "SELECT count(*) FROM (SELECT DISTINCT permission FROM role_permissions) p "
                    "WHERE NOT EXISTS (SELECT 1 FROM role_permissions s "
                    "WHERE s.role = 'super_user' AND s.permission = p.permission)"
                )
            assert "files.read" not in viewer
            assert "devices.read" in viewer
            assert missing_for_super == 0
        finally:
            await conn.close()


async def test_demo_tenant_has_one_user_per_role_and_five_devices(database: Database) -> None:
    async with scratch_database(database, migrate=True, seed=True) as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            await seeds.seed_demo(conn, "shared-hash")
            async with tenant_transaction(conn, None, staff=True):
                users = {
                    r["email"]: (r["role"], r["client_id"], r["password_hash"])
                    for r in await conn.fetch(
                        "SELECT email, role, client_id, password_hash FROM users"
                    )
                }
                client = await conn.fetchval("SELECT id FROM clients WHERE slug = 'demo'")
                serials = [
                    r["serial"]
                    for r in await conn.fetch(
                        "SELECT serial FROM devices WHERE client_id = $1 AND status = 'active' "
                        "ORDER BY serial",
                        client,
                    )
                ]
            assert users == {
                "admin@demo.lifebox.local": ("admin", None, "shared-hash"),
                "client@demo.lifebox.local": ("client", client, "shared-hash"),
                "operator@demo.lifebox.local": ("operator", client, "shared-hash"),
                "viewer@demo.lifebox.local": ("viewer", client, "shared-hash"),
            }
            assert serials == [f"DEMO-000{i}" for i in range(1, 6)]
        finally:
            await conn.close()


async def test_the_first_platform_admin_is_made_once(database: Database) -> None:
    async with scratch_database(database, migrate=True, seed=True) as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            await seeds.seed_demo(conn, "h")  # a staff admin exists; still no super_user
            assert await seeds.ensure_platform_admin(conn, "root@lifebox.local", "h1") is True
            assert await seeds.ensure_platform_admin(conn, "other@lifebox.local", "h2") is False
            async with tenant_transaction(conn, None, staff=True):
                supers = await conn.fetch(
                    "SELECT email, client_id FROM users WHERE role = 'super_user'"
                )
            assert [(r["email"], r["client_id"]) for r in supers] == [("root@lifebox.local", None)]
        finally:
            await conn.close()
