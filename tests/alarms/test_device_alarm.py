"""DEVICE_ALARM rules: hardware alarms devices publish on ``…/alarms`` raise and clear a
rule's event at the alarms' times, by a real ingest worker's sweeper, on the rule's devices
only; a clear through the API clears too."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime

import asyncpg
import pytest

from lifebox_grpc.alarms.device_alarm import timeline
from lifebox_grpc.runtime.mosquitto import EmbeddedMosquitto
from lifebox_grpc.store import device_alarms as alarm_store
from lifebox_grpc.store.pool import tenant_transaction
from tests.helpers.alarms import events_of
from tests.helpers.ingest import publisher, register_fleet, running_ingest
from tests.helpers.services import Database
from tests.helpers.wait import async_wait_until

pytestmark = pytest.mark.timeout(180)


def at(base_ms: int, i: int) -> datetime:
    return datetime.fromtimestamp((base_ms + i * 1000) / 1000, UTC)


def alarm(serial: str, base_ms: int, i: int, code: str, severity: str = "warning",
          cleared: bool = False) -> tuple[str, bytes]:  # fmt: skip
    body = {"code": code, "severity": severity, "ts": base_ms + i * 1000, "cleared": cleared}
    return f"lifebox/v1/{serial}/alarms", json.dumps(body).encode()


async def hardware_rule(
    conn: asyncpg.Connection, client: uuid.UUID, device: uuid.UUID, least: str
) -> uuid.UUID:
    async with tenant_transaction(conn, None, staff=True):
        rule: uuid.UUID = await conn.fetchval(
            "INSERT INTO alarm_rules (client_id, name, kind, device_id, field, condition, "
            "device_alarm_severity, severity, created_at) VALUES ($1, 'hw', 'device_alarm', $2, "
            "NULL, NULL, $3, 'critical', now() - interval '60 seconds') RETURNING id",
            client,
            device,
            least,
        )
    return rule


def test_the_timeline_holds_while_an_alarm_of_the_severity_is_open() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    marks = [
        alarm_store.AlarmMark("fan", "minor", t0.replace(second=1), None),
        alarm_store.AlarmMark("hot", "critical", t0.replace(second=2), None),
        # `cleared` message for hot, and its severity does not matter.
        alarm_store.AlarmMark("hot", "warning", t0.replace(second=3), t0.replace(second=3)),
        # Raised and cleared through the API later.
        alarm_store.AlarmMark("psu", "major", t0.replace(second=4), t0.replace(second=6)),
    ]
    got = [(m.time.second, m.holds) for m in timeline(marks, "major")]
    assert got == [(1, False), (2, True), (3, False), (4, True), (6, False)]


async def test_device_alarms_raise_and_clear_the_rule_on_its_devices_only(
    database: Database, broker: EmbeddedMosquitto, owner_conn: asyncpg.Connection
) -> None:
    fleet = await register_fleet(database.owner_dsn, 2)
    (device, serial), (other, other_serial) = fleet.devices
    rule = await hardware_rule(owner_conn, fleet.client_id, device, "major")
    # After the rule was made, and before now (an API clear is at the time it is made).
    base = int(time.time() * 1000) - 30_000
    sequence = [
        alarm(serial, base, 0, "fan", "minor"),  # below the severity
        alarm(serial, base, 1, "overheat", "critical"),  # raises
        alarm(serial, base, 2, "door", "major"),
        alarm(serial, base, 3, "overheat", cleared=True),  # door is still open
        alarm(serial, base, 4, "door", cleared=True),  # clears
        alarm(serial, base, 5, "fan", cleared=True),
        alarm(serial, base, 6, "psu", "critical"),  # raises again
        # Not the rule's device.
        alarm(other_serial, base, 1, "overheat", "critical"),
    ]
    sweeping = running_ingest(
        database, broker.url, broker.port, LIFEBOX_ALARM_SWEEP_INTERVAL_S="0.3"
    )
    with sweeping, publisher(broker.port) as pub:
        pub.publish_all(sequence)

        async def two_events() -> bool:
            return len(await events_of(owner_conn, rule)) == 2

        await async_wait_until(two_events, 60, "device alarm events")
        events = await events_of(owner_conn, rule)
        assert [(e["raised_at"], e["cleared_at"]) for e in events] == [
            (at(base, 1), at(base, 4)),
            (at(base, 6), None),
        ]
        assert {e["device_id"] for e in events} == {device}
        # A clear through the API (DeviceService) clears the rule's event at its time.
        async with tenant_transaction(owner_conn, fleet.client_id):
            (psu,) = [
                a
                for a in await alarm_store.list_alarms(
                    owner_conn, device, open_only=True, after=None, limit=10
                )
                if a.code == "psu"
            ]
            done = await alarm_store.clear_alarm(owner_conn, device, psu.id)
        assert done is not None
        assert done.cleared_at is not None

        async def cleared() -> bool:
            return (await events_of(owner_conn, rule))[-1]["cleared_at"] is not None

        await async_wait_until(cleared, 60, "API clear")
    events = await events_of(owner_conn, rule)
    assert events[-1]["cleared_at"] == done.cleared_at
    assert len(events) == 2
    assert await events_of(owner_conn, rule, other) == []
