"""Calculated metrics through ingest: formulas evaluated on each batch's accepted readings in
the native core, their points committed with the readings (exactly once) and served by
ListDataPoints."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest
from google.protobuf import timestamp_pb2

from lifebox.v1 import telemetry_pb2 as T
from lifebox.v1 import telemetry_pb2_grpc
from lifebox_grpc import metrics
from lifebox_grpc.ingest.consumer import Received
from lifebox_grpc.ingest.devices import DeviceDirectory
from lifebox_grpc.ingest.formulas import FormulaCache
from lifebox_grpc.ingest.pipeline import Pipeline
from lifebox_grpc.native import Decoder
from lifebox_grpc.runtime.mosquitto import EmbeddedMosquitto
from lifebox_grpc.store.pool import tenant_transaction
from tests.helpers.grpc import Server, make_account, sign_in
from tests.helpers.ingest import publisher, register_fleet, running_ingest
from tests.helpers.services import Database
from tests.helpers.wait import async_wait_until

pytestmark = pytest.mark.timeout(180)


async def make_formula(
    conn: asyncpg.Connection,
    client_id: uuid.UUID,
    name: str,
    expression: str,
    *,
    unit: str | None = None,
    device_id: uuid.UUID | None = None,
    device_type: str | None = None,
) -> uuid.UUID:
    async with tenant_transaction(conn, client_id):
        formula_id: uuid.UUID = await conn.fetchval(
            "INSERT INTO calculation_formulas (client_id, name, expression, unit, device_id, "
            "device_type) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            client_id,
            name,
            expression,
            unit,
            device_id,
            device_type,
        )
    return formula_id


async def points_of(
    conn: asyncpg.Connection, client_id: uuid.UUID, device_id: uuid.UUID
) -> list[tuple[str, datetime, float, int]]:
    async with tenant_transaction(conn, client_id):
        rows = await conn.fetch(
            "SELECT metric, time, value, formula_version FROM device_data_points "
            "WHERE device_id = $1 ORDER BY metric, time",
            device_id,
        )
    return [(r["metric"], r["time"], r["value"], r["formula_version"]) for r in rows]


def at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def ts(moment: datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(moment)
    return out


async def test_points_from_mqtt_ingest_are_served_by_list_data_points(
    database: Database,
    broker: EmbeddedMosquitto,
    owner_conn: asyncpg.Connection,
    grpc_server: Server,
) -> None:
    fleet = await register_fleet(database.owner_dsn, 2)
    client = fleet.client_id
    (meter, s_meter), (other, s_other) = fleet.devices
    power = await make_formula(
        owner_conn, client, "power_kw", "voltage_l1 * current_l1 / 1000", unit="kW"
    )
    await make_formula(
        owner_conn, client, "pf", "active_power_w / apparent_power_va", device_id=meter
    )
    base = int(time.time() * 1000) - 60_000
    meter_readings = [
        {"ts": base, "voltage_l1": 230, "current_l1": 10, "active_power_w": 5,
         "apparent_power_va": 10},
        # Division by zero: no pf point; power_kw still computed.
        {"ts": base + 1000, "voltage_l1": 200, "current_l1": 5, "active_power_w": 5,
         "apparent_power_va": 0},
        # A missing field: neither point.
        {"ts": base + 2000, "voltage_l1": 200},
    ]  # fmt: skip
    other_readings = [{"ts": base, "voltage_l1": 100, "current_l1": 1, "active_power_w": 1,
                       "apparent_power_va": 2}]  # fmt: skip
    with (
        running_ingest(database, broker.url, broker.port) as worker,
        publisher(broker.port) as pub,
    ):
        pub.publish_all(
            [
                (f"lifebox/v1/{s_meter}/telemetry", json.dumps(meter_readings).encode()),
                (f"lifebox/v1/{s_other}/telemetry", json.dumps(other_readings).encode()),
            ]
        )

        async def committed() -> bool:
            return len(await points_of(owner_conn, client, other)) == 1

        await async_wait_until(committed, 60, "points committed")
        # 1 division by zero + 2 missing fields (power_kw and pf of the third reading).
        assert worker.metric("lifebox_ingest_points_skipped_total") == 3
        assert worker.metric("lifebox_ingest_points_total") == 4
    assert await points_of(owner_conn, client, meter) == [
        ("pf", at(base), 0.5, 1),
        ("power_kw", at(base), 2.3, 1),
        ("power_kw", at(base + 1000), 1.0, 1),
    ]
    assert await points_of(owner_conn, client, other) == [("power_kw", at(base), 0.1, 1)]
    user = await sign_in(grpc_server, await make_account(owner_conn, "client", client))
    api = telemetry_pb2_grpc.TelemetryServiceStub(grpc_server.channel)
    reply = await api.ListDataPoints(
        T.ListDataPointsRequest(
            device_id=str(meter),
            metric="power_kw",
            start_time=ts(at(base - 1000)),
            end_time=ts(at(base + 10_000)),
        ),
        metadata=user.md,
    )
    assert [(p.metric, p.value, p.unit, p.formula_version) for p in reply.points] == [
        ("power_kw", 2.3, "kW", 1),
        ("power_kw", 1.0, "kW", 1),
    ]
    assert reply.points[0].formula_id == str(power)


@pytest.fixture
async def pipeline(database: Database) -> AsyncIterator[Pipeline]:
    """The ingest pipeline in-process, as the ingest role, with formulas."""
    pool = await asyncpg.create_pool(database.ingest_dsn, min_size=1, max_size=2)
    assert pool is not None
    try:
        yield Pipeline(
            pool,
            Decoder(),
            DeviceDirectory(),
            lambda messages: len(messages),
            4096,
            formulas=FormulaCache(50_000),
        )
    finally:
        await pool.close()


def message(serial: str, readings: list[dict[str, float]]) -> Received:
    now_us = time.time_ns() // 1000
    topic = f"lifebox/v1/{serial}/telemetry"
    return Received(1, 1, topic, json.dumps(readings).encode(), now_us, 0)


async def test_readings_after_an_edit_use_the_new_version(
    database: Database, owner_conn: asyncpg.Connection, pipeline: Pipeline
) -> None:
    fleet = await register_fleet(database.owner_dsn, 1)
    ((device, serial),) = fleet.devices
    formula = await make_formula(owner_conn, fleet.client_id, "double", "temperature_c * 2")
    base = int(time.time() * 1000) - 60_000
    await pipeline.process([message(serial, [{"ts": base, "temperature_c": 1}])])
    async with tenant_transaction(owner_conn, fleet.client_id):
        await owner_conn.execute(
            "UPDATE calculation_formulas SET expression = 'temperature_c * 3' WHERE id = $1",
            formula,
        )
    await pipeline.process([message(serial, [{"ts": base + 1000, "temperature_c": 1}])])
    async with tenant_transaction(owner_conn, fleet.client_id):
        await owner_conn.execute(
            "UPDATE calculation_formulas SET enabled = false WHERE id = $1", formula
        )
    await pipeline.process([message(serial, [{"ts": base + 2000, "temperature_c": 1}])])
    assert await points_of(owner_conn, fleet.client_id, device) == [
        ("double", at(base), 2.0, 1),
        ("double", at(base + 1000), 3.0, 2),
    ]


async def test_a_redelivered_batch_does_not_double_its_points(
    database: Database, owner_conn: asyncpg.Connection, pipeline: Pipeline
) -> None:
    fleet = await register_fleet(database.owner_dsn, 1)
    ((device, serial),) = fleet.devices
    await make_formula(owner_conn, fleet.client_id, "double", "temperature_c * 2")
    base = int(time.time() * 1000) - 60_000
    first = [{"ts": base + i * 1000, "temperature_c": i} for i in range(3)]
    await pipeline.process([message(serial, first)])
    deduplicated = metrics.INGEST_BATCHES.labels("deduplicated")._value.get()
    # Redelivered with one new reading: only the new reading's point is added.
    again = [*first, {"ts": base + 3000, "temperature_c": 3}]
    await pipeline.process([message(serial, again)])
    assert metrics.INGEST_BATCHES.labels("deduplicated")._value.get() == deduplicated + 1
    assert await points_of(owner_conn, fleet.client_id, device) == [
        ("double", at(base + i * 1000), 2.0 * i, 1) for i in range(4)
    ]
    async with tenant_transaction(owner_conn, fleet.client_id):
        readings = await owner_conn.fetchval(
            "SELECT count(*) FROM telemetry_events WHERE device_id = $1", device
        )
    assert readings == 4


async def test_formulas_scoped_to_a_type_or_another_tenant_are_kept_apart(
    database: Database, owner_conn: asyncpg.Connection, pipeline: Pipeline
) -> None:
    fleet = await register_fleet(database.owner_dsn, 2)
    away = await register_fleet(database.owner_dsn, 1)
    (meter, s_meter), (sensor, s_sensor) = fleet.devices
    ((away_device, s_away),) = away.devices
    async with tenant_transaction(owner_conn, fleet.client_id):
        await owner_conn.execute("UPDATE devices SET device_type = 'meter' WHERE id = $1", meter)
    await make_formula(owner_conn, fleet.client_id, "meter_only", "temperature_c + 1",
                       device_type="meter")  # fmt: skip
    await make_formula(owner_conn, away.client_id, "away_only", "temperature_c + 2")
    base = int(time.time() * 1000) - 60_000
    reading = [{"ts": base, "temperature_c": 1}]
    await pipeline.process(
        [message(s_meter, reading), message(s_sensor, reading), message(s_away, reading)]
    )
    assert await points_of(owner_conn, fleet.client_id, meter) == [("meter_only", at(base), 2, 1)]
    assert await points_of(owner_conn, fleet.client_id, sensor) == []
    assert await points_of(owner_conn, away.client_id, away_device) == [
        ("away_only", at(base), 3, 1)
    ]
