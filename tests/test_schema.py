"""The migrated catalogue: every model, its keys, forced row-level security, cascades."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import pytest

from lifebox_grpc.store import schema_doc
from lifebox_grpc.store.pool import savepoint, tenant_transaction
from tests.helpers import factories

MODELS = {
    "auth": ["roles", "users", "role_permissions", "password_reset_tokens", "refresh_tokens"],
    "devices": [
        "devices",
        "device_locations",
        "device_metadata_history",
        "device_metadata_snapshots",
        "user_device_assignments",
        "device_alarms",
    ],
    "telemetry": ["telemetry_events", "unknown_field_catalog", "device_data_points"],
    "commands": [
        "control_commands",
        "command_acknowledgments",
        "command_templates",
        "command_permissions",
        "user_command_permissions",
        "command_executions",
    ],
    "alarms": ["alarm_rules", "alarm_events", "alarm_reactions", "alarm_acknowledgments"],
    "billing": [
        "clients",
        "subscriptions",
        "customer_pricing",
        "postpaid_periods",
        "credit_transactions",
        "fawry_payment_notifications",
        "fawry_customer_data",
        "exchange_rates",
    ],
    "dashboards": [
        "quick_view_pages",
        "quick_view_page_shares",
        "files",
        "widgets",
        "dashboard_layouts",
        "calculation_formulas",
    ],
}

# child -> parents it must reference (the seed's arrows and the field lists).
FOREIGN_KEYS = {
    "users": {"clients", "roles"},
    "role_permissions": {"roles"},
    "password_reset_tokens": {"users"},
    "refresh_tokens": {"users", "refresh_tokens"},
    "devices": {"clients"},
    "device_locations": {"devices"},
    "device_metadata_history": {"devices", "users"},
    "device_metadata_snapshots": {"devices", "users"},
    "user_device_assignments": {"users", "devices"},
    "device_alarms": {"devices"},
    "telemetry_events": {"devices"},
    "unknown_field_catalog": {"clients"},
    # formula_id names the formula that computed a point, without a foreign key (0098).
    "device_data_points": {"devices"},
    "control_commands": {"devices", "command_templates", "users"},
    "command_acknowledgments": {"control_commands"},
    "command_templates": {"clients", "command_permissions"},
    "user_command_permissions": {"users", "command_permissions", "devices"},
    "command_executions": {"control_commands", "users"},
    "alarm_rules": {"clients", "devices", "users"},
    "alarm_events": {"alarm_rules", "devices"},
    "alarm_reactions": {"alarm_rules", "command_templates"},
    "alarm_acknowledgments": {"alarm_events", "users"},
    "subscriptions": {"clients"},
    "customer_pricing": {"clients"},
    "postpaid_periods": {"clients"},
    "credit_transactions": {"clients", "postpaid_periods", "fawry_payment_notifications"},
    "fawry_payment_notifications": {"clients"},
    "fawry_customer_data": {"clients", "users"},
    "quick_view_pages": {"users"},
    "quick_view_page_devices": {"quick_view_pages", "devices"},
    "quick_view_page_command_templates": {"quick_view_pages", "command_templates"},
    "quick_view_page_shares": {"quick_view_pages", "users"},
    "files": {"clients", "users", "devices"},
    "widgets": {"dashboard_layouts", "quick_view_pages", "devices"},
    "dashboard_layouts": {"users"},
    "calculation_formulas": {"clients", "users"},
    "ingest_rejects": {"clients"},
}

KNOWN_FIELDS = (
    "voltage_l1 f, voltage_l2 f, voltage_l3 f, current_l1 f, current_l2 f, current_l3 f, "
    "active_power_w f, reactive_power_var f, apparent_power_va f, power_factor f, "
    "frequency_hz f, energy_import_kwh f, energy_export_kwh f, temperature_c f, humidity_pct f, "
    "pressure_hpa f, battery_v f, battery_pct f, rssi_dbm f, snr_db f, latitude f, longitude f, "
    "altitude_m f, co2_ppm f, pm25_ugm3 f, uptime_s i, packet_seq i, tx_bytes i, rx_bytes i, "
    "error_count i, reboot_count i, relay_on b, door_open b, tamper_alarm b, low_battery b, "
    "firmware_version t, status t"
)
_TYPES = {"f": "float8", "i": "int8", "b": "bool", "t": "text"}


def test_the_seed_lists_38_models() -> None:
    assert sum(len(models) for models in MODELS.values()) == 38


async def test_every_model_is_a_table(owner_conn: asyncpg.Connection) -> None:
    tables = {
        r["relname"]
        for r in await owner_conn.fetch(
            "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace "
            "AND relkind IN ('r', 'p') AND NOT relispartition"
        )
    }
    missing = {m for models in MODELS.values() for m in models} - tables
    assert missing == set()


async def test_every_relationship_is_a_foreign_key(owner_conn: asyncpg.Connection) -> None:
    rows = await owner_conn.fetch(
        "SELECT conrelid::regclass::text AS child, confrelid::regclass::text AS parent "
        "FROM pg_constraint WHERE contype = 'f' AND conparentid = 0"
    )
    found: dict[str, set[str]] = {}
    for row in rows:
        found.setdefault(row["child"], set()).add(row["parent"])
    missing = {child: parents - found.get(child, set()) for child, parents in FOREIGN_KEYS.items()}
    assert {k: v for k, v in missing.items() if v} == {}


async def test_every_table_with_client_id_has_forced_row_level_security(
    owner_conn: asyncpg.Connection,
) -> None:
    rows = await owner_conn.fetch(
        """
        SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,
               EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid) AS has_policy
        FROM pg_class c
        WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p')
          AND NOT c.relispartition
          AND (c.relname = 'clients' OR EXISTS (
              SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'client_id'))
        """
    )
    assert len(rows) >= 36
    weak = [r["relname"] for r in rows if not (r["relrowsecurity"] and r["relforcerowsecurity"])]
    unpoliced = [r["relname"] for r in rows if not r["has_policy"]]
    assert weak == []
    assert unpoliced == []


async def test_telemetry_columns_match_the_encoder_contract(owner_conn: asyncpg.Connection) -> None:
    rows = await owner_conn.fetch(
        "SELECT a.attname, t.typname FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
        "WHERE a.attrelid = 'telemetry_events'::regclass AND a.attnum > 0 "
        "AND NOT a.attisdropped ORDER BY a.attnum"
    )
    expected = [("time", "timestamptz"), ("device_id", "uuid"), ("client_id", "uuid")]
    for item in KNOWN_FIELDS.split(", "):
        name, kind = item.split()
        expected.append((name, _TYPES[kind]))
    expected.append(("extra", "jsonb"))
    assert [(r["attname"], r["typname"]) for r in rows] == expected


async def test_a_reading_is_unique_per_device_and_time(owner_conn: asyncpg.Connection) -> None:
    client = await factories.make_client(owner_conn)
    device, _ = await factories.make_device(owner_conn, client)
    at = await factories.make_reading(owner_conn, client, device, voltage_l1=230.0)
    with pytest.raises(asyncpg.UniqueViolationError):
        await factories.make_reading(owner_conn, client, device, at, voltage_l1=231.0)


async def test_emails_are_unique_whatever_their_case(owner_conn: asyncpg.Connection) -> None:
    client = await factories.make_client(owner_conn)
    email = f"{factories.unique('Case')}@Example.TEST"
    await factories.make_user(owner_conn, client, email=email)
    with pytest.raises(asyncpg.UniqueViolationError):
        await factories.make_user(owner_conn, client, email=email.lower())


async def test_serials_are_unique_across_tenants(owner_conn: asyncpg.Connection) -> None:
    a, b = await factories.make_client(owner_conn), await factories.make_client(owner_conn)
    _, serial = await factories.make_device(owner_conn, a)
    with pytest.raises(asyncpg.UniqueViolationError):
        await factories.make_device(owner_conn, b, serial)


async def test_a_child_row_cannot_name_a_device_of_another_tenant(
    owner_conn: asyncpg.Connection,
) -> None:
    a, b = await factories.make_client(owner_conn), await factories.make_client(owner_conn)
    device, _ = await factories.make_device(owner_conn, a)
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await factories.make_reading(owner_conn, b, device)


async def test_staff_roles_have_no_client_and_tenant_roles_need_one(
    owner_conn: asyncpg.Connection,
) -> None:
    client = await factories.make_client(owner_conn)
    async with tenant_transaction(owner_conn, None, staff=True):
        for client_id, role in ((client, "admin"), (None, "operator")):
            with pytest.raises(asyncpg.CheckViolationError):
                async with savepoint(owner_conn):
                    await owner_conn.execute(
                        "INSERT INTO users (client_id, email, password_hash, role) "
                        "VALUES ($1, $2, 'x', $3)",
                        client_id,
                        f"{factories.unique('bad')}@x.test",
                        role,
                    )


# -- cascades ----------------------------------------------------------------------------------


async def _exists(conn: asyncpg.Connection, table: str, column: str, value: object) -> bool:
    async with tenant_transaction(conn, None, staff=True):
        return bool(
            await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {table} WHERE {column} = $1)", value)
        )


async def test_deleting_a_device_removes_its_data_and_unlinks_its_files(
    owner_conn: asyncpg.Connection,
) -> None:
    client = await factories.make_client(owner_conn)
    user = await factories.make_user(owner_conn, client)
    device, _ = await factories.make_device(owner_conn, client)
    command = await factories.make_command(owner_conn, client, device)
    await factories.make_reading(owner_conn, client, device, temperature_c=20.0)
    async with tenant_transaction(owner_conn, None, staff=True):
        await owner_conn.execute(
            "INSERT INTO command_executions (client_id, command_id, to_status, actor_kind) "
            "VALUES ($1, $2, 'pending', 'system')",
            client,
            command,
        )
        file_id = await owner_conn.fetchval(
            "INSERT INTO files (client_id, owner_id, device_id, name, content_type, size_bytes, "
            "sha256, storage_key) VALUES ($1, $2, $3, 'f', 'text/plain', 1, sha256('x'), $4) "
            "RETURNING id",
            client,
            user,
            device,
            factories.unique("key"),
        )
        await owner_conn.execute("DELETE FROM devices WHERE id = $1", device)
        file_row = await owner_conn.fetchrow(
            "SELECT client_id, device_id FROM files WHERE id = $1", file_id
        )
    for table in ("telemetry_events", "control_commands"):
        assert not await _exists(owner_conn, table, "device_id", device)
    assert not await _exists(owner_conn, "command_executions", "command_id", command)
    # SET NULL (device_id) only: the file keeps its tenant.
    assert dict(file_row) == {"client_id": client, "device_id": None}


async def test_deleting_a_user_keeps_the_audit_trail(owner_conn: asyncpg.Connection) -> None:
    client = await factories.make_client(owner_conn)
    user = await factories.make_user(owner_conn, client)
    device, _ = await factories.make_device(owner_conn, client)
    command = await factories.make_command(owner_conn, client, device)
    async with tenant_transaction(owner_conn, None, staff=True):
        await owner_conn.execute(
            "UPDATE control_commands SET issued_by = $2 WHERE id = $1", command, user
        )
        await owner_conn.execute(
            "INSERT INTO command_executions (client_id, command_id, to_status, actor_kind, "
            "actor_user_id) VALUES ($1, $2, 'sent', 'user', $3)",
            client,
            command,
            user,
        )
        await owner_conn.execute("DELETE FROM users WHERE id = $1", user)
        issued_by = await owner_conn.fetchval(
            "SELECT issued_by FROM control_commands WHERE id = $1", command
        )
        actors = await owner_conn.fetch(
            "SELECT actor_user_id FROM command_executions WHERE command_id = $1", command
        )
    assert issued_by is None
    assert [r["actor_user_id"] for r in actors] == [None, None]  # the factory's, and this one


async def test_a_template_in_use_cannot_be_deleted(owner_conn: asyncpg.Connection) -> None:
    client = await factories.make_client(owner_conn)
    device, _ = await factories.make_device(owner_conn, client)
    await factories.make_command(owner_conn, client, device, code="ping")
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        async with tenant_transaction(owner_conn, None, staff=True):
            await owner_conn.execute(
                "DELETE FROM command_templates WHERE client_id IS NULL AND code = 'ping'"
            )


async def test_revoking_a_grant_revokes_what_was_delegated_from_it(
    owner_conn: asyncpg.Connection,
) -> None:
    client = await factories.make_client(owner_conn)
    boss = await factories.make_user(owner_conn, client)
    worker = await factories.make_user(owner_conn, client, role="operator")
    async with tenant_transaction(owner_conn, None, staff=True):
        parent = await owner_conn.fetchval(
            "INSERT INTO user_command_permissions (client_id, user_id, command_permission, "
            "can_delegate) VALUES ($1, $2, 'relay_control', true) RETURNING id",
            client,
            boss,
        )
        await owner_conn.execute(
            "INSERT INTO user_command_permissions (client_id, user_id, command_permission, "
            "granted_by, parent_grant_id) VALUES ($1, $2, 'relay_control', $3, $4)",
            client,
            worker,
            boss,
            parent,
        )
        await owner_conn.execute("DELETE FROM user_command_permissions WHERE id = $1", parent)
    assert not await _exists(owner_conn, "user_command_permissions", "user_id", worker)


async def test_a_client_with_money_history_cannot_be_deleted_but_one_without_cascades(
    owner_conn: asyncpg.Connection,
) -> None:
    paying = await factories.make_client(owner_conn)
    async with tenant_transaction(owner_conn, None, staff=True):
        await owner_conn.execute(
            "INSERT INTO credit_transactions (client_id, amount, currency, kind) "
            "VALUES ($1, 50, 'EGP', 'topup')",
            paying,
        )
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        async with tenant_transaction(owner_conn, None, staff=True):
            await owner_conn.execute("DELETE FROM clients WHERE id = $1", paying)

    trial = await factories.make_client(owner_conn)
    user = await factories.make_user(owner_conn, trial)
    device, _ = await factories.make_device(owner_conn, trial)
    await factories.make_command(owner_conn, trial, device)
    await factories.make_reading(owner_conn, trial, device, datetime.now(UTC))
    async with tenant_transaction(owner_conn, None, staff=True):
        await owner_conn.execute(
            "INSERT INTO command_templates (client_id, code, name, command_permission, "
            "parameters_schema) VALUES ($1, 'own', 'Own', 'basic_control', $2::jsonb)",
            trial,
            '{"type": "object"}',
        )
        await owner_conn.execute("DELETE FROM clients WHERE id = $1", trial)
    assert not await _exists(owner_conn, "users", "id", user)
    assert not await _exists(owner_conn, "devices", "id", device)
    assert not await _exists(owner_conn, "telemetry_events", "device_id", device)
    assert not await _exists(owner_conn, "command_templates", "client_id", trial)


# docs/schema.md is generated from the pg_partman shape (partitions, the default partition).
@pytest.mark.storage("partman")
async def test_docs_schema_md_matches_the_database(owner_conn: asyncpg.Connection) -> None:
    text = await schema_doc.render(owner_conn)
    assert "erDiagram" in text
    assert schema_doc.is_current(schema_doc.DEFAULT_OUTPUT, text), (
        "docs/schema.md is out of date: run `lifebox schema-doc`"
    )
