"""Tenants with a row in every tenant table, for the isolation matrices.

A tenant table is any table of schema public with a client_id column (and clients itself,
keyed by id). The catalogue decides which tables are checked, so a table added later without
a row in :func:`populate_tenant` fails the coverage test instead of escaping the matrices.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import asyncpg

from lifebox_grpc.store.pool import tenant_transaction
from tests.helpers import factories

_TENANT_TABLES = """
SELECT c.relname FROM pg_class c
WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p')
  AND NOT c.relispartition
  AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid
              AND a.attname = 'client_id' AND NOT a.attisdropped)
ORDER BY 1
"""


def key_column(table: str) -> str:
    return "id" if table == "clients" else "client_id"


async def tenant_tables(conn: asyncpg.Connection) -> list[str]:
    return ["clients", *[r["relname"] for r in await conn.fetch(_TENANT_TABLES)]]


async def populate_tenant(conn: asyncpg.Connection) -> uuid.UUID:
    """A tenant with at least one row in every tenant table."""
    client = await factories.make_client(conn)
    user = await factories.make_user(conn, client, role="client")
    device, serial = await factories.make_device(conn, client)
    command = await factories.make_command(conn, client, device)
    await factories.make_reading(conn, client, device, temperature_c=21.5)
    now = datetime.now(UTC)
    statements = [
        (
            "INSERT INTO password_reset_tokens (user_id, client_id, token_hash, expires_at) "
            "VALUES ($1, $2, gen_random_bytes(32), now() + interval '1 hour')",
            user,
            client,
        ),
        (
            "INSERT INTO refresh_tokens (user_id, client_id, token_hash, family_id, expires_at) "
            "VALUES ($1, $2, gen_random_bytes(32), gen_random_uuid(), now() + interval '1 day')",
            user,
            client,
        ),
        (
            "INSERT INTO device_locations (time, device_id, client_id, latitude, longitude) "
            "VALUES ($3, $1, $2, 30.04, 31.23)",
            device,
            client,
            now,
        ),
        (
            "INSERT INTO device_metadata_history (client_id, device_id, changed_by, path, "
            "new_value) VALUES ($2, $1, $3, 'site', '\"cairo\"')",
            device,
            client,
            user,
        ),
        (
            "INSERT INTO device_metadata_snapshots (client_id, device_id, reason, metadata) "
            "VALUES ($2, $1, 'test', '{}')",
            device,
            client,
        ),
        (
            "INSERT INTO user_device_assignments (client_id, user_id, device_id) "
            "VALUES ($2, $3, $1)",
            device,
            client,
            user,
        ),
        (
            "INSERT INTO device_alarms (client_id, device_id, code, raised_at) "
            "VALUES ($2, $1, 'overheat', now())",
            device,
            client,
        ),
        (
            "INSERT INTO unknown_field_catalog (client_id, field_name, inferred_type) "
            "VALUES ($1, 'mystery', 'number')",
            client,
        ),
        (
            "INSERT INTO unknown_field_devices (client_id, device_id, field_name, inferred_type) "
            "VALUES ($2, $1, 'mystery', 'number')",
            device,
            client,
        ),
        (
            "INSERT INTO device_credentials (client_id, device_id, username, password_hash, "
            "hash_iterations, hash_salt, hash_digest) "
            "SELECT $2, $1, serial, '$7$101$c2FsdA==$ZA==', 101, 'saltsalt', 'ZA==' "
            "FROM devices WHERE id = $1",
            device,
            client,
        ),
        # --- presence (issue 13) ---
        (
            "SELECT lifebox_presence_apply($2, $1, 'online', 1, 'connect', now(), 'status')",
            device,
            client,
        ),
        # --- end presence ---
        (
            "INSERT INTO calculation_formulas (client_id, name, expression, inputs) "
            "VALUES ($1, 'power_kw', 'active_power_w / 1000', '[\"active_power_w\"]')",
            client,
        ),
        (
            "INSERT INTO device_data_points (time, device_id, client_id, metric, value, "
            "formula_id) SELECT $3, $1, $2, 'power_kw', 1.5, id FROM calculation_formulas "
            "WHERE client_id = $2",
            device,
            client,
            now,
        ),
        (
            "INSERT INTO command_templates (client_id, code, name, command_permission, "
            "parameters_schema) VALUES ($1, 'custom_blink', 'Blink', 'basic_control', "
            '\'{"type": "object"}\')',
            client,
        ),
        (
            "INSERT INTO command_acknowledgments (client_id, command_id, status) "
            "VALUES ($1, $2, 'received')",
            client,
            command,
        ),
        (
            "INSERT INTO command_executions (client_id, command_id, to_status, actor_kind, "
            "actor_user_id) VALUES ($1, $2, 'pending', 'user', $3)",
            client,
            command,
            user,
        ),
        (
            "INSERT INTO user_command_permissions (client_id, user_id, command_permission) "
            "VALUES ($1, $2, 'power_management')",
            client,
            user,
        ),
        (
            "INSERT INTO alarm_rules (client_id, name, device_id, field, condition, "
            "threshold_high) VALUES ($1, 'hot', $2, 'temperature_c', 'gt', 40)",
            client,
            device,
        ),
        (
            "INSERT INTO alarm_events (client_id, rule_id, device_id, severity, trigger_value) "
            "SELECT $1, id, $2, 'warning', 41 FROM alarm_rules WHERE client_id = $1",
            client,
            device,
        ),
        (
            "INSERT INTO alarm_reactions (client_id, rule_id, kind, command_template_id) "
            "SELECT $1, r.id, 'command', t.id FROM alarm_rules r, command_templates t "
            "WHERE r.client_id = $1 AND t.client_id IS NULL AND t.code = 'reboot'",
            client,
        ),
        (
            "INSERT INTO alarm_acknowledgments (client_id, event_id, user_id) "
            "SELECT $1, id, $2 FROM alarm_events WHERE client_id = $1",
            client,
            user,
        ),
        (
            "INSERT INTO subscriptions (client_id, plan, current_period_start, "
            "current_period_end, device_quota, price, currency) "
            "VALUES ($1, 'basic', now(), now() + interval '30 days', 10, 99.5, 'EGP')",
            client,
        ),
        (
            "INSERT INTO customer_pricing (client_id, item, unit_price, currency) "
            "VALUES ($1, 'device_month', 12.25, 'EGP')",
            client,
        ),
        (
            "INSERT INTO postpaid_periods (client_id, period_start, period_end, currency) "
            "VALUES ($1, now(), now() + interval '30 days', 'EGP')",
            client,
        ),
        (
            "INSERT INTO fawry_payment_notifications (client_id, raw_body, fawry_ref_number, "
            "merchant_ref_number, order_status, payment_amount, signature_valid) "
            "VALUES ($1, '{}', $2, $2, 'PAID', 100, true)",
            client,
            factories.unique("fawry"),
        ),
        (
            "INSERT INTO credit_transactions (client_id, amount, currency, kind, external_ref) "
            "VALUES ($1, 100, 'EGP', 'topup', 'ref-1')",
            client,
        ),
        (
            "INSERT INTO fawry_customer_data (client_id, user_id, customer_profile_id, "
            "card_token, card_last_four, card_brand) VALUES ($1, $2, 'p1', 'tok', '4242', 'VISA')",
            client,
            user,
        ),
        # --- billing (issue 16) ---
        (
            "INSERT INTO fawry_charges (client_id, merchant_ref_number, payment_method, amount, "
            "currency, customer_profile_id) VALUES ($1, $2, 'PAYATFAWRY', 100, 'EGP', 'p1')",
            client,
            factories.unique("LB").replace("-", ""),
        ),
        (
            "INSERT INTO postpaid_period_lines (client_id, period_id, item, quantity, "
            "unit_price, amount, currency) SELECT $1, id, 'command', 3, 1.5, 4.5, 'EGP' "
            "FROM postpaid_periods WHERE client_id = $1",
            client,
        ),
        (
            "INSERT INTO storage_samples (client_id, relation, day, row_count, avg_row_bytes) "
            "VALUES ($1, 'telemetry_events', current_date, 1, 120)",
            client,
        ),
        ("UPDATE clients SET status = 'suspended' WHERE id = $1", client),
        ("UPDATE clients SET status = 'active' WHERE id = $1", client),
        # --- end billing (issue 16) ---
        (
            "INSERT INTO quick_view_pages (client_id, owner_id, title) VALUES ($1, $2, 'Main')",
            client,
            user,
        ),
        (
            "INSERT INTO quick_view_page_devices (client_id, page_id, device_id) "
            "SELECT $1, id, $2 FROM quick_view_pages WHERE client_id = $1",
            client,
            device,
        ),
        (
            "INSERT INTO quick_view_page_command_templates (client_id, page_id, template_id) "
            "SELECT $1, p.id, t.id FROM quick_view_pages p, command_templates t "
            "WHERE p.client_id = $1 AND t.client_id IS NULL AND t.code = 'reboot'",
            client,
        ),
        (
            "INSERT INTO quick_view_page_shares (client_id, page_id, user_id) "
            "SELECT $1, id, $2 FROM quick_view_pages WHERE client_id = $1",
            client,
            user,
        ),
        (
            "INSERT INTO files (client_id, owner_id, device_id, name, content_type, size_bytes, "
            "sha256, storage_key) VALUES ($1, $2, $3, 'manual.pdf', 'application/pdf', 10, "
            "sha256('x'), $4)",
            client,
            user,
            device,
            factories.unique("files/key"),
        ),
        # --- files (issue 17): its bytes in the default store (0095); the trigger counts
        # them in client_file_usage ---
        (
            "INSERT INTO file_chunks (client_id, storage_key, start_byte, data) "
            "SELECT $1, storage_key, 0, 'x' FROM files WHERE client_id = $1",
            client,
        ),
        (
            "INSERT INTO dashboard_layouts (client_id, user_id) VALUES ($1, $2)",
            client,
            user,
        ),
        (
            "INSERT INTO widgets (client_id, layout_id, kind, device_id) "
            "SELECT $1, id, 'gauge', $2 FROM dashboard_layouts WHERE client_id = $1",
            client,
            device,
        ),
        (
            "INSERT INTO ingest_rejects (client_id, serial, topic, code, reason, raw) "
            "VALUES ($1, $2, 'lifebox/v1/' || $2 || '/telemetry', 'bad_json', 'test', '\\x7b')",
            client,
            serial,
        ),
        # --- commands (issue 14) ---
        (
            "INSERT INTO command_outbox (command_id, client_id, device_id) VALUES ($1, $2, $3)",
            command,
            client,
            device,
        ),
        (
            "INSERT INTO command_idempotency_keys (client_id, requester, key, command_id) "
            "VALUES ($1, 'user:' || $2::uuid::text, 'populate', $3)",
            client,
            user,
            command,
        ),
        # --- end commands ---
        # --- alarms (issue 15) ---
        (
            "INSERT INTO alarm_rule_states (client_id, rule_id, device_id, event_id) "
            "SELECT $1, rule_id, device_id, id FROM alarm_events WHERE client_id = $1",
            client,
        ),
        (
            "INSERT INTO alarm_device_cursors (client_id, device_id, evaluated_through) "
            "VALUES ($1, $2, now())",
            client,
            device,
        ),
        (
            "INSERT INTO alarm_event_changes (client_id, event_id, rule_id, device_id, change, "
            "status, changed_at) SELECT $1, id, rule_id, device_id, 'raised', status, raised_at "
            "FROM alarm_events WHERE client_id = $1",
            client,
        ),
        (
            "INSERT INTO alarm_rule_webhook_secrets (rule_id, client_id, secret) "
            "SELECT id, $1, decode(repeat('ab', 32), 'hex') FROM alarm_rules WHERE client_id = $1",
            client,
        ),
        (
            "INSERT INTO alarm_reaction_outcomes (client_id, event_id, reaction_id, phase, kind, "
            "outcome) SELECT $1, e.id, r.id, 'raise', 'command', 'sent' "
            "FROM alarm_events e, alarm_reactions r WHERE e.client_id = $1 AND r.client_id = $1",
            client,
        ),
        (
            "INSERT INTO alarm_webhook_health (reaction_id, client_id) "
            "SELECT id, $1 FROM alarm_reactions WHERE client_id = $1",
            client,
        ),
        # --- end alarms ---
    ]
    async with tenant_transaction(conn, None, staff=True):
        for sql, *args in statements:
            await conn.execute(sql, *args)
    return client
