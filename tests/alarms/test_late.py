"""Late readings, both sides of the lateness window (60 s), by a real ingest worker: within
it every kind evaluates in time order; older ones are evaluated on arrival by a threshold
rule, skipped by a duration rule, counted, and the event says it was late."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import asyncpg
import pytest

from lifebox_grpc.runtime.mosquitto import EmbeddedMosquitto
from lifebox_grpc.store.pool import tenant_transaction
from tests.alarms.test_evaluation import at, readings, t, wait_evaluated
from tests.helpers.alarms import make_rule
from tests.helpers.ingest import publisher, register_fleet, running_ingest
from tests.helpers.services import Database

pytestmark = pytest.mark.timeout(180)


async def events(
    conn: asyncpg.Connection, rule: uuid.UUID, device: uuid.UUID
) -> list[dict[str, Any]]:
    async with tenant_transaction(conn, None, staff=True):
        rows = list(
            await conn.fetch(
                "SELECT raised_at, cleared_at, details::text AS details FROM alarm_events "
                "WHERE rule_id = $1 AND device_id = $2 ORDER BY raised_at",
                rule,
                device,
            )
        )
    return [{**r, "details": json.loads(r["details"])} for r in rows]


async def late_count(conn: asyncpg.Connection, device: uuid.UUID) -> int:
    async with tenant_transaction(conn, None, staff=True):
        n: int = await conn.fetchval(
            "SELECT late_readings FROM alarm_device_cursors WHERE device_id = $1", device
        )
    return n


async def test_late_readings_on_both_sides_of_the_window(
    database: Database, broker: EmbeddedMosquitto, owner_conn: asyncpg.Connection
) -> None:
    fleet = await register_fleet(database.owner_dsn, 2)
    (recent, s_recent), (old, s_old) = fleet.devices
    # Tenant-wide: both rules see every device.
    instant = await make_rule(owner_conn, fleet.client_id)
    lasting = await make_rule(owner_conn, fleet.client_id, duration_s=2)
    now_ms = int(time.time() * 1000)
    values = [t(v) for v in (25, 35, 35, 35, 25)]
    recent_base = now_ms - 30_000  # 30 s old when committed: within the window
    old_base = now_ms - 300_000  # 5 minutes old: beyond it
    with running_ingest(database, broker.url, broker.port), publisher(broker.port) as pub:
        pub.publish_all(readings(s_recent, recent_base, values) + readings(s_old, old_base, values))
        await wait_evaluated(owner_conn, recent, at(recent_base, 4))
        await wait_evaluated(owner_conn, old, at(old_base, 4))
    # Within the window: both rules in time order, nothing late.
    (e,) = await events(owner_conn, instant, recent)
    assert (e["raised_at"], e["cleared_at"]) == (at(recent_base, 1), at(recent_base, 4))
    assert "late" not in e["details"]
    (e,) = await events(owner_conn, lasting, recent)
    assert (e["raised_at"], e["cleared_at"]) == (at(recent_base, 3), at(recent_base, 4))
    assert await late_count(owner_conn, recent) == 0
    # Beyond it: the threshold rule evaluates them (on arrival, here in order), noted late;
    # the duration rule skips them though 35 held for 2 s.
    (e,) = await events(owner_conn, instant, old)
    assert (e["raised_at"], e["cleared_at"]) == (at(old_base, 1), at(old_base, 4))
    assert 299 < e["details"]["late"]["late_by_s"] < 400
    assert 296 < e["details"]["cleared_late"]["late_by_s"] < 400
    assert await events(owner_conn, lasting, old) == []
    assert await late_count(owner_conn, old) == 5
