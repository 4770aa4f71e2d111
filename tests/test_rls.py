"""Tenant isolation by row-level security, over every tenant table, as the application role.

A tenant table is any table of schema public with a client_id column (and clients itself,
keyed by id). The catalogue decides which tables are checked, so a table added later without
a row in :func:`populate_tenant` fails the coverage test instead of escaping the matrix.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from lifebox_grpc.store.pool import tenant_transaction
from tests.helpers import factories
from tests.helpers.services import Database
from tests.helpers.tenants import key_column, populate_tenant, tenant_tables


@pytest.fixture
def database(storage_database: Database) -> Database:
    """The matrix holds on both storage paths: partitions and hypertables."""
    return storage_database


@pytest.fixture
async def tenants(owner_conn: asyncpg.Connection) -> tuple[uuid.UUID, uuid.UUID]:
    return await populate_tenant(owner_conn), await populate_tenant(owner_conn)


async def _count(conn: asyncpg.Connection, table: str, client: uuid.UUID) -> int:
    return int(
        await conn.fetchval(f"SELECT count(*) FROM {table} WHERE {key_column(table)} = $1", client)
    )


async def test_every_tenant_table_is_covered_by_the_matrix(
    owner_conn: asyncpg.Connection, tenants: tuple[uuid.UUID, uuid.UUID]
) -> None:
    a, _ = tenants
    empty = []
    async with tenant_transaction(owner_conn, None, staff=True):
        for table in await tenant_tables(owner_conn):
            if await _count(owner_conn, table, a) == 0:
                empty.append(table)
    assert empty == [], f"populate_tenant() puts no row in {empty}"


async def test_a_tenant_sees_its_rows_and_never_another_tenants(
    owner_conn: asyncpg.Connection,
    app_conn: asyncpg.Connection,
    tenants: tuple[uuid.UUID, uuid.UUID],
) -> None:
    a, b = tenants
    leaks, blind = [], []
    async with tenant_transaction(app_conn, a):
        for table in await tenant_tables(owner_conn):
            if await _count(app_conn, table, b):
                leaks.append(table)
            if not await _count(app_conn, table, a):
                blind.append(table)
    assert leaks == []
    assert blind == []


async def test_with_no_tenant_set_no_tenant_row_is_visible(
    owner_conn: asyncpg.Connection,
    app_conn: asyncpg.Connection,
    tenants: tuple[uuid.UUID, uuid.UUID],
) -> None:
    visible = {}
    for table in await tenant_tables(owner_conn):
        # Outside any transaction, and inside one that set nothing.
        outside = await app_conn.fetchval(
            f"SELECT count(*) FROM {table} WHERE {key_column(table)} IS NOT NULL"
        )
        async with app_conn.transaction():
            inside = await app_conn.fetchval(
                f"SELECT count(*) FROM {table} WHERE {key_column(table)} IS NOT NULL"
            )
        if outside or inside:
            visible[table] = (outside, inside)
    assert visible == {}


async def test_the_staff_path_sees_every_tenant(
    owner_conn: asyncpg.Connection,
    app_conn: asyncpg.Connection,
    tenants: tuple[uuid.UUID, uuid.UUID],
) -> None:
    missing = []
    async with tenant_transaction(app_conn, None, staff=True):
        for table in await tenant_tables(owner_conn):
            for client in tenants:
                if not await _count(app_conn, table, client):
                    missing.append((table, client))
    assert missing == []


async def test_a_tenant_cannot_write_a_row_for_another_tenant(
    owner_conn: asyncpg.Connection,
    app_conn: asyncpg.Connection,
    tenants: tuple[uuid.UUID, uuid.UUID],
) -> None:
    a, b = tenants
    accepted, unclear = [], []
    for table in await tenant_tables(owner_conn):
        async with tenant_transaction(owner_conn, None, staff=True):
            row = await owner_conn.fetchval(
                f"SELECT to_jsonb(t) FROM {table} t WHERE {key_column(table)} = $1 LIMIT 1", b
            )
        can_insert = await app_conn.fetchval(
            "SELECT has_table_privilege('lifebox_app', $1, 'INSERT')", f"public.{table}"
        )
        try:
            async with tenant_transaction(app_conn, a):
                await app_conn.execute(
                    f"INSERT INTO {table} SELECT * FROM jsonb_populate_record(NULL::{table}, $1)",
                    row,
                )
            accepted.append(table)
        except asyncpg.InsufficientPrivilegeError as exc:
            # Where the role may insert at all, it must be the policy that said no.
            if can_insert and "row-level security" not in str(exc):
                unclear.append((table, str(exc)))
    assert accepted == []
    assert unclear == []


async def test_a_tenant_cannot_move_its_row_to_another_tenant(
    app_conn: asyncpg.Connection, tenants: tuple[uuid.UUID, uuid.UUID]
) -> None:
    a, b = tenants
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        async with tenant_transaction(app_conn, a):
            await app_conn.execute("UPDATE devices SET client_id = $2 WHERE client_id = $1", a, b)


async def test_global_templates_are_shared_and_only_staff_write_them(
    app_conn: asyncpg.Connection, tenants: tuple[uuid.UUID, uuid.UUID]
) -> None:
    a, _ = tenants
    async with tenant_transaction(app_conn, a):
        codes = {
            r["code"]: r["client_id"]
            for r in await app_conn.fetch("SELECT code, client_id FROM command_templates")
        }
        # A's own template and the globals; never B's (both have 'custom_blink').
        assert codes["reboot"] is None
        assert codes["custom_blink"] == a
        changed = await app_conn.execute(
            "UPDATE command_templates SET name = 'hijacked' WHERE client_id IS NULL"
        )
        assert changed == "UPDATE 0"
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        async with tenant_transaction(app_conn, a):
            await app_conn.execute(
                "INSERT INTO command_templates (client_id, code, name, command_permission, "
                "parameters_schema) VALUES (NULL, 'sneaky', 'x', 'basic_control', $1::jsonb)",
                json.dumps({"type": "object"}),
            )


async def test_reference_tables_are_read_by_all_and_written_by_staff_only(
    app_conn: asyncpg.Connection, tenants: tuple[uuid.UUID, uuid.UUID]
) -> None:
    a, _ = tenants
    async with tenant_transaction(app_conn, a):
        assert await app_conn.fetchval("SELECT count(*) FROM roles") == 5
        assert await app_conn.fetchval("SELECT count(*) FROM role_permissions") > 0
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
        async with tenant_transaction(app_conn, a):
            await app_conn.execute(
                "INSERT INTO role_permissions (role, permission) VALUES ('viewer', 'x.y')"
            )
    async with tenant_transaction(app_conn, None, staff=True):
        await app_conn.execute(
            "INSERT INTO exchange_rates (base, quote, rate, as_of, source) "
            "VALUES ('USD', 'EGP', 48.5, $1, 'test')",
            datetime.now(UTC) - timedelta(seconds=1),
        )


async def test_users_of_a_tenant_never_include_staff_and_staff_see_everyone(
    owner_conn: asyncpg.Connection,
    app_conn: asyncpg.Connection,
    tenants: tuple[uuid.UUID, uuid.UUID],
) -> None:
    a, _ = tenants
    staff = await factories.make_user(owner_conn, None, role="admin")
    async with tenant_transaction(app_conn, a):
        assert not await app_conn.fetchval("SELECT count(*) FROM users WHERE id = $1", staff)
        assert await app_conn.fetchval("SELECT count(*) FROM users WHERE client_id IS NULL") == 0
    async with tenant_transaction(app_conn, None, staff=True):
        assert await app_conn.fetchval("SELECT count(*) FROM users WHERE id = $1", staff) == 1


async def test_pre_authentication_lookups_find_any_user_and_leave_the_tenant_unchanged(
    owner_conn: asyncpg.Connection, app_conn: asyncpg.Connection
) -> None:
    client = await factories.make_client(owner_conn)
    email = f"{factories.unique('Login')}@Example.test"
    user = await factories.make_user(owner_conn, client, email=email)
    async with app_conn.transaction():
        found = await app_conn.fetch("SELECT id FROM lifebox_auth_user_by_email($1)", email.lower())
        assert [r["id"] for r in found] == [user]
        # The staff path was for the lookup only.
        assert await app_conn.fetchval("SELECT count(*) FROM users") == 0
        assert await app_conn.fetchval("SELECT current_setting('lifebox.staff', true)") != "on"


# -- grants ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "TRUNCATE devices",
        "CREATE TABLE app_made (x int)",
        "ALTER TABLE devices ADD COLUMN x int",
        "UPDATE credit_transactions SET description = 'x'",
        "DELETE FROM command_executions",
        "DELETE FROM device_metadata_history",
        "UPDATE telemetry_events SET status = 'x'",
        "DELETE FROM ingest_rejects",
        "SELECT * FROM schema_migrations",
    ],
)
async def test_the_application_role_cannot(app_conn: asyncpg.Connection, statement: str) -> None:
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await app_conn.execute(statement)


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT * FROM users",
        "SELECT metadata FROM devices",
        "SELECT * FROM credit_transactions",
        "SELECT * FROM telemetry_events",
        "UPDATE devices SET name = 'x'",
        "DELETE FROM telemetry_events",
        "TRUNCATE telemetry_events",
        "INSERT INTO alarm_rules (client_id, name, field, condition) "
        "VALUES (gen_random_uuid(), 'x', 'x', 'gt')",
    ],
)
async def test_the_ingest_role_cannot(database: Database, statement: str) -> None:
    conn = await asyncpg.connect(database.ingest_dsn)
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(statement)
    finally:
        await conn.close()


async def test_the_ingest_role_can_do_its_job(
    database: Database, owner_conn: asyncpg.Connection
) -> None:
    client = await factories.make_client(owner_conn)
    device, serial = await factories.make_device(owner_conn, client, status="provisioned")
    command = await factories.make_command(owner_conn, client, device)
    conn = await asyncpg.connect(database.ingest_dsn)
    try:
        row = await conn.fetchrow(
            "SELECT d.id, d.client_id, d.status, c.status AS client_status FROM devices d "
            "JOIN clients c ON c.id = d.client_id WHERE d.serial = $1",
            serial,
        )
        assert row["id"] == device
        await conn.copy_records_to_table(
            "telemetry_events",
            records=[(datetime.now(UTC), device, client, 230.0)],
            columns=["time", "device_id", "client_id", "voltage_l1"],
        )
        await conn.execute(
            "UPDATE devices SET last_seen_at = now(), status = 'active' WHERE id = $1", device
        )
        await conn.execute(
            "INSERT INTO command_acknowledgments (client_id, command_id, status) "
            "VALUES ($1, $2, 'received')",
            client,
            command,
        )
        async with conn.transaction():  # a status change comes with its trail row
            await conn.execute(
                "UPDATE control_commands SET status = 'delivered', delivered_at = now(), "
                "updated_at = now() WHERE id = $1",
                command,
            )
            await conn.execute(
                "INSERT INTO command_executions (client_id, command_id, from_status, "
                "to_status, actor_kind) VALUES ($1, $2, 'pending', 'delivered', 'device')",
                client,
                command,
            )
        await conn.execute(
            "INSERT INTO unknown_field_catalog AS c (client_id, field_name, inferred_type) "
            "VALUES ($1, 'foo', 'string') ON CONFLICT (client_id, field_name) "
            "DO UPDATE SET seen_count = c.seen_count + 1",
            client,
        )
        for expected in ("INSERT 0 1", "INSERT 0 0"):  # which devices sent it: once each
            status = await conn.execute(
                "INSERT INTO unknown_field_devices (client_id, device_id, field_name, "
                "inferred_type) SELECT $1, d.id, 'foo', 'string' FROM devices d "
                "WHERE d.id = $2 AND d.client_id = $1 "
                "ON CONFLICT (device_id, field_name) DO NOTHING",
                client,
                device,
            )
            assert status == expected
        # The redelivery path: COPY into a temp table, merge without duplicates.
        await conn.execute(
            "CREATE TEMP TABLE staging (time timestamptz, device_id uuid, client_id uuid)"
        )
        await conn.execute(
            "INSERT INTO staging VALUES ($1, $2, $3)",
            datetime.now(UTC),
            device,
            client,
        )
        for expected in ("INSERT 0 1", "INSERT 0 0"):
            status = await conn.execute(
                "INSERT INTO telemetry_events (time, device_id, client_id) "
                "SELECT time, device_id, client_id FROM staging "
                "ON CONFLICT (device_id, time) DO NOTHING"
            )
            assert status == expected
    finally:
        await conn.close()


async def test_policies_read_the_settings_once_per_statement(
    owner_conn: asyncpg.Connection,
) -> None:
    """Each setting is read in a sub-select (an InitPlan, once per statement), never per row."""
    rows = await owner_conn.fetch(
        "SELECT tablename, policyname, coalesce(qual, '') || ' ' || coalesce(with_check, '') "
        "AS expr FROM pg_policies WHERE schemaname = 'public'"
    )
    assert len(rows) > 40
    once = re.compile(r"\( SELECT (lifebox_is_staff|lifebox_current_client_id)\(\) AS \w+\)")
    per_row = [
        (row["tablename"], row["policyname"])
        for row in rows
        if re.search(r"lifebox_|current_setting", once.sub("", row["expr"]))
    ]
    assert per_row == []
    plan = await owner_conn.fetchval(
        "EXPLAIN (FORMAT JSON) SELECT count(*) FROM telemetry_events WHERE time > now()"
    )
    assert "InitPlan" in plan
