"""MQTT ingest end to end: a real broker, a real `lifebox ingest` process, a real database."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from lifebox_grpc.runtime.mosquitto import EmbeddedMosquitto
from lifebox_grpc.store.pool import tenant_transaction
from tests.helpers import factories
from tests.helpers.ingest import publisher, register_fleet, running_ingest
from tests.helpers.services import Database
from tests.helpers.wait import async_wait_until

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
async def staff(database: Database) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database.owner_dsn)
    yield conn
    await conn.close()


async def staff_fetch(conn: asyncpg.Connection, sql: str, *args: object) -> list[asyncpg.Record]:
    async with tenant_transaction(conn, None, staff=True):
        return list(await conn.fetch(sql, *args))


async def wait_rows(conn: asyncpg.Connection, sql: str, expected: int, *args: object) -> int:
    async def reached() -> int | None:
        rows = await staff_fetch(conn, sql, *args)
        count = int(rows[0][0])
        return count if count >= expected else None

    return await async_wait_until(reached, 90, f"{expected} rows for {sql}")


def now_ms() -> int:
    return int(time.time() * 1000)


async def test_readings_land_with_values_extra_catalog_and_last_seen(
    database: Database, broker: EmbeddedMosquitto, staff: asyncpg.Connection
) -> None:
    fleet = await register_fleet(database.owner_dsn, 1)
    device_id, serial = fleet.devices[0]
    base = now_ms() - 10_000
    single = {"ts": base, "voltage_l1": 230.5, "relay_on": True, "uptime_s": 42, "mood": "ok"}
    array = [
        {"ts": base + 1000, "temperature_c": 21, "status": "fine"},
        {"ts": base + 2000, "temperature_c": 22.5, "nested": {"a": [1, 2]}},
    ]
    with running_ingest(database, broker.url, broker.port), publisher(broker.port) as pub:
        pub.publish_all(
            [
                (f"lifebox/v1/{serial}/telemetry", json.dumps(single).encode()),
                (f"lifebox/v1/{serial}/telemetry", json.dumps(array).encode()),
            ]
        )
        await wait_rows(
            staff, "SELECT count(*) FROM telemetry_events WHERE device_id = $1", 3, device_id
        )
        rows = await staff_fetch(
            staff,
            "SELECT time, client_id, voltage_l1, relay_on, uptime_s, temperature_c, status, extra "
            "FROM telemetry_events WHERE device_id = $1 ORDER BY time",
            device_id,
        )
        assert [r["client_id"] for r in rows] == [fleet.client_id] * 3
        assert rows[0]["voltage_l1"] == 230.5
        assert rows[0]["relay_on"] is True
        assert rows[0]["uptime_s"] == 42
        assert json.loads(rows[0]["extra"]) == {"mood": "ok"}
        assert rows[1]["temperature_c"] == 21.0
        assert rows[1]["status"] == "fine"
        assert rows[1]["extra"] is None
        assert json.loads(rows[2]["extra"]) == {"nested": {"a": [1, 2]}}
        assert int(rows[2]["time"].timestamp() * 1000) == base + 2000

        async def catalogued() -> list[asyncpg.Record] | None:
            found = await staff_fetch(
                staff,
                "SELECT field_name, inferred_type, seen_count FROM unknown_field_catalog "
                "WHERE client_id = $1 ORDER BY field_name",
                fleet.client_id,
            )
            return found if len(found) == 2 else None

        catalog = await async_wait_until(catalogued, 30, "catalog")
        assert [(r["field_name"], r["inferred_type"]) for r in catalog] == [
            ("mood", "string"),
            ("nested", "object"),
        ]
        seen = await staff_fetch(staff, "SELECT last_seen_at FROM devices WHERE id = $1", device_id)
        assert seen[0]["last_seen_at"] is not None
        assert int(seen[0]["last_seen_at"].timestamp() * 1000) == base + 2000


async def test_bad_messages_are_rejected_and_stored_without_losing_good_ones(
    database: Database, broker: EmbeddedMosquitto, staff: asyncpg.Connection
) -> None:
    fleet = await register_fleet(database.owner_dsn, 2)
    (dev_a, serial_a), (dev_b, _) = fleet.devices
    disabled = await register_fleet(database.owner_dsn, 1, status="disabled")
    base = now_ms() - 60_000
    good = [
        (f"lifebox/v1/{serial_a}/telemetry", json.dumps({"ts": base + i, "voltage_l1": i}).encode())
        for i in range(200)
    ]
    poison = [
        (f"lifebox/v1/{serial_a}/telemetry", b"{not json"),
        (f"lifebox/v1/{serial_a}/telemetry", b"\xff\xfe\x00"),
        (f"lifebox/v1/{serial_a}/telemetry", json.dumps({"voltage_l1": "high"}).encode()),
        (f"lifebox/v1/{serial_a}/telemetry", json.dumps({"ts": "1999-01-01T00:00:00Z"}).encode()),
        ("lifebox/v1/NO-SUCH-DEVICE/telemetry", json.dumps({"voltage_l1": 1}).encode()),
        (
            f"lifebox/v1/{disabled.devices[0][1]}/telemetry",
            json.dumps({"voltage_l1": 1}).encode(),
        ),
        # Device A's topic naming device B in the body: lands as A or is rejected, never as B.
        (
            f"lifebox/v1/{serial_a}/telemetry",
            json.dumps({"ts": base + 500, "device_id": str(dev_b), "voltage_l1": 7777.5}).encode(),
        ),
    ]
    mixed = good[:100] + poison + good[100:]
    with running_ingest(database, broker.url, broker.port), publisher(broker.port) as pub:
        pub.publish_all(mixed)
        await wait_rows(
            staff,
            "SELECT count(*) FROM ingest_rejects WHERE serial = ANY($1)",
            7,
            [serial_a, "NO-SUCH-DEVICE", disabled.devices[0][1]],
        )
        await wait_rows(
            staff, "SELECT count(*) FROM telemetry_events WHERE device_id = $1", 200, dev_a
        )
    rows = await staff_fetch(
        staff,
        "SELECT count(*) FROM telemetry_events WHERE client_id = $1 AND device_id <> $2",
        fleet.client_id,
        dev_a,
    )
    assert rows[0][0] == 0, "a reading landed on a device its topic did not name"
    values = await staff_fetch(
        staff,
        "SELECT count(*) FROM telemetry_events WHERE device_id = $1 AND voltage_l1 = 7777.5",
        dev_a,
    )
    assert values[0][0] <= 1
    assert (
        await staff_fetch(
            staff, "SELECT count(*) FROM telemetry_events WHERE device_id = $1", dev_a
        )
    )[0][0] == 200 + values[0][0]
    rejects = await staff_fetch(
        staff,
        "SELECT serial, code, reason, client_id, raw FROM ingest_rejects "
        "WHERE serial = ANY($1) ORDER BY received_at",
        [serial_a, "NO-SUCH-DEVICE", disabled.devices[0][1]],
    )
    codes = {r["code"] for r in rejects}
    assert {"invalid_json", "invalid_utf8", "type_error", "ts_out_of_range"} <= codes
    assert {"unknown_device", "device_disabled"} <= codes
    type_error = next(r for r in rejects if r["code"] == "type_error")
    assert "voltage_l1" in type_error["reason"]
    assert type_error["client_id"] == fleet.client_id
    assert bytes(type_error["raw"]) == json.dumps({"voltage_l1": "high"}).encode()
    unknown = next(r for r in rejects if r["code"] == "unknown_device")
    assert unknown["client_id"] is None


async def test_alarms_become_device_alarms_and_bad_ones_are_rejected(
    database: Database, broker: EmbeddedMosquitto, staff: asyncpg.Connection
) -> None:
    fleet = await register_fleet(database.owner_dsn, 1)
    device_id, serial = fleet.devices[0]
    alarm = {"code": "OVERHEAT", "severity": "major", "message": "board at 90C"}
    with running_ingest(database, broker.url, broker.port), publisher(broker.port) as pub:
        pub.publish_all(
            [
                (f"lifebox/v1/{serial}/alarms", json.dumps(alarm).encode()),
                (f"lifebox/v1/{serial}/alarms", json.dumps({"severity": "major"}).encode()),
            ]
        )
        await wait_rows(staff, "SELECT count(*) FROM ingest_rejects WHERE serial = $1", 1, serial)
        await wait_rows(
            staff, "SELECT count(*) FROM device_alarms WHERE device_id = $1", 1, device_id
        )
    rows = await staff_fetch(
        staff,
        "SELECT code, severity, message, client_id FROM device_alarms WHERE device_id = $1",
        device_id,
    )
    assert [(r["code"], r["severity"], r["message"], r["client_id"]) for r in rows] == [
        ("OVERHEAT", "major", "board at 90C", fleet.client_id)
    ]
    reject = await staff_fetch(staff, "SELECT code FROM ingest_rejects WHERE serial = $1", serial)
    assert reject[0]["code"] == "missing_field"


async def _issue_command(conn: asyncpg.Connection, client_id: Any, device_id: Any) -> object:
    return await factories.make_command(conn, client_id, device_id, status="sent")


async def test_command_acks_move_status_forward_only_and_foreign_acks_are_rejected(
    database: Database, broker: EmbeddedMosquitto, staff: asyncpg.Connection
) -> None:
    fleet = await register_fleet(database.owner_dsn, 2)
    (dev_a, serial_a), (dev_b, _) = fleet.devices
    command = await _issue_command(staff, fleet.client_id, dev_a)
    other = await _issue_command(staff, fleet.client_id, dev_b)
    ack = f"lifebox/v1/{serial_a}/commands/{command}/ack"
    with running_ingest(database, broker.url, broker.port), publisher(broker.port) as pub:
        pub.publish_all([(ack, json.dumps({"status": "completed", "result": {"ok": 1}}).encode())])
        await wait_rows(
            staff,
            "SELECT count(*) FROM control_commands WHERE id = $1 AND status = 'completed'",
            1,
            command,
        )
        # A late "received" must not move a completed command back; an ack naming another
        # device's command on this device's topic is a reject.
        pub.publish_all(
            [
                (ack, json.dumps({"status": "received"}).encode()),
                (
                    f"lifebox/v1/{serial_a}/commands/{other}/ack",
                    json.dumps({"status": "completed"}).encode(),
                ),
            ]
        )
        await wait_rows(
            staff,
            "SELECT count(*) FROM ingest_rejects WHERE serial = $1 AND code = 'unknown_command'",
            2,
            serial_a,
        )
    status = await staff_fetch(
        staff,
        "SELECT id, status, result FROM control_commands WHERE id = ANY($1)",
        [command, other],
    )
    by_id = {r["id"]: r for r in status}
    assert by_id[command]["status"] == "completed"
    assert json.loads(by_id[command]["result"]) == {"ok": 1}
    assert by_id[other]["status"] == "sent"
    acks = await staff_fetch(
        staff, "SELECT status FROM command_acknowledgments WHERE command_id = $1", command
    )
    assert [r["status"] for r in acks] == ["completed"]
    trail = await staff_fetch(
        staff,
        "SELECT from_status, to_status, actor_kind FROM command_executions WHERE command_id = $1"
        " ORDER BY at",
        command,
    )
    # Born pending and sent by the factory; the device's ack moved it once.
    assert [tuple(r) for r in trail] == [
        (None, "pending", "system"),
        ("pending", "sent", "system"),
        ("sent", "completed", "device"),
    ]


async def test_loadgen_registers_devices_and_its_readings_are_committed(
    database: Database, broker: EmbeddedMosquitto, staff: asyncpg.Connection
) -> None:
    import os
    import subprocess
    import sys

    prefix = f"LG{uuid.uuid4().hex[:6]}-"
    env = {
        **os.environ,
        "LIFEBOX_DATABASE_URL": database.app_dsn,
        "LIFEBOX_OWNER_DATABASE_URL": database.owner_dsn,
        "LIFEBOX_INGEST_DATABASE_URL": database.ingest_dsn,
        "LIFEBOX_MQTT_URL": broker.url,
    }
    command = [sys.executable, "-m", "lifebox_grpc.cli", "loadgen", "--register"]
    args = ["--devices", "5", "--messages", "200", "--per-message", "3", "--serial-prefix", prefix]
    with running_ingest(database, broker.url, broker.port):
        result = await asyncio.to_thread(
            subprocess.run,
            command + args,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert "sent 200 messages, 200 acknowledged by the broker / 600 readings" in result.stdout
        # It waited for ingest and says where every reading went. (The drop count is the
        # shared broker's: tests/test_overload.py checks it on a broker of its own.)
        assert re.search(
            r"readings: sent 600, committed 600, rejected 0, dropped by the broker "
            r"(0|unknown [^,]*), unaccounted 0",
            result.stdout,
        ), result.stdout
        await wait_rows(
            staff,
            "SELECT count(*) FROM telemetry_events t JOIN devices d ON d.id = t.device_id "
            "WHERE d.serial LIKE $1",
            600,
            prefix + "%",
        )
    rows = await staff_fetch(
        staff,
        "SELECT count(DISTINCT t.device_id), count(*) FILTER (WHERE t.voltage_l1 IS NULL) "
        "FROM telemetry_events t JOIN devices d ON d.id = t.device_id WHERE d.serial LIKE $1",
        prefix + "%",
    )
    assert tuple(rows[0]) == (5, 0)


async def test_hostile_alarm_is_a_reject_and_the_worker_keeps_going(
    database: Database, broker: EmbeddedMosquitto, staff: asyncpg.Connection
) -> None:
    fleet = await register_fleet(database.owner_dsn, 1)
    device_id, serial = fleet.devices[0]
    topic = f"lifebox/v1/{serial}/alarms"
    with running_ingest(database, broker.url, broker.port) as worker, publisher(broker.port) as pub:
        pub.publish_all(
            [
                (topic, b"[" * 5000),
                (topic, b'{"code": NaN}'),
                (topic, json.dumps({"code": "DOOR", "message": "a\u0000b"}).encode()),
                (topic, json.dumps({"code": "DOOR", "severity": "info"}).encode()),
            ]
        )
        await wait_rows(
            staff, "SELECT count(*) FROM device_alarms WHERE device_id = $1", 1, device_id
        )
        await wait_rows(staff, "SELECT count(*) FROM ingest_rejects WHERE serial = $1", 3, serial)
        assert worker.proc is not None
        assert worker.proc.poll() is None
    codes = await staff_fetch(
        staff, "SELECT code FROM ingest_rejects WHERE serial = $1 ORDER BY code", serial
    )
    assert [r["code"] for r in codes] == ["invalid_string", "non_finite", "too_deep"]


async def test_a_database_refusal_not_caused_by_the_message_is_waited_out_not_rejected(
    database: Database, broker: EmbeddedMosquitto, staff: asyncpg.Connection
) -> None:
    fleet = await register_fleet(database.owner_dsn, 1)
    device_id, serial = fleet.devices[0]
    superuser = await asyncpg.connect(database.superuser_lifebox_dsn)
    try:
        # As while a deployment rolls out: the ingest role can't write telemetry for a while.
        await superuser.execute("REVOKE INSERT ON telemetry_events FROM lifebox_ingest")
        with running_ingest(database, broker.url, broker.port) as worker:
            with publisher(broker.port) as pub:
                pub.publish_all(
                    [(f"lifebox/v1/{serial}/telemetry", json.dumps({"voltage_l1": 1}).encode())]
                )
            await async_wait_until(
                lambda: _retried(worker), 30, "the worker to retry the refused batch"
            )
            await superuser.execute("GRANT INSERT ON telemetry_events TO lifebox_ingest")
            await wait_rows(
                staff, "SELECT count(*) FROM telemetry_events WHERE device_id = $1", 1, device_id
            )
    finally:
        await superuser.execute("GRANT INSERT ON telemetry_events TO lifebox_ingest")
        await superuser.close()
    rejects = await staff_fetch(staff, "SELECT code FROM ingest_rejects WHERE serial = $1", serial)
    assert rejects == []


async def _retried(worker: object) -> bool:
    value = await asyncio.to_thread(
        worker.metric,  # type: ignore[attr-defined]
        "lifebox_ingest_db_retries_total",
    )
    return bool(value >= 1)
