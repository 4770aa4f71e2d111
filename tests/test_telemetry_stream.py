"""MQTT to StreamTelemetry end to end: a real ingest worker, a real server, real readings."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf import duration_pb2, timestamp_pb2

from lifebox.v1 import telemetry_pb2 as T
from lifebox.v1 import telemetry_pb2_grpc
from lifebox_grpc.runtime.mosquitto import EmbeddedMosquitto
from tests.helpers.grpc import Server, make_account, sign_in
from tests.helpers.ingest import publisher, register_fleet, running_ingest
from tests.helpers.services import Database
from tests.helpers.wait import async_wait_until

pytestmark = pytest.mark.timeout(180)


def ts_ms(ms: int) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromMilliseconds(ms)
    return out


async def collect(call: Any, expected: int, timeout: float = 60) -> list[tuple[str, int, float]]:
    """(device, time micros, voltage_l1) of stream messages until ``expected`` readings."""
    got: list[tuple[str, int, float]] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(got) < expected:
        message = await asyncio.wait_for(call.read(), deadline - loop.time())
        assert message is not grpc.aio.EOF
        series = message.series
        (voltage,) = [c for c in series.columns if c.field == "voltage_l1"]
        got += [
            (series.device_id, t, v)
            for t, v in zip(series.time_micros, voltage.doubles, strict=True)
        ]
    return got


async def listeners(conn: asyncpg.Connection) -> int:
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'lifebox-serve-listen'"
        )
    )


async def test_published_readings_stream_live_and_from_a_start_time_then_query_and_aggregate(
    database: Database,
    broker: EmbeddedMosquitto,
    grpc_server: Server,
    owner_conn: asyncpg.Connection,
) -> None:
    fleet = await register_fleet(database.owner_dsn, 2)
    (first, serial_a), (second, serial_b) = fleet.devices
    user = await sign_in(grpc_server, await make_account(owner_conn, "client", fleet.client_id))
    api = telemetry_pb2_grpc.TelemetryServiceStub(grpc_server.channel)
    ids = [str(first), str(second)]
    fields = ["voltage_l1", "uptime_s"]
    base = (int(time.time()) - 600) * 1000

    def readings(serial: str, start: int, count: int, offset: float) -> tuple[str, bytes]:
        batch = [
            {"ts": base + i * 1000, "voltage_l1": offset + i, "uptime_s": i}
            for i in range(start, start + count)
        ]
        return f"lifebox/v1/{serial}/telemetry", json.dumps(batch).encode()

    with running_ingest(database, broker.url, broker.port), publisher(broker.port) as pub:
        live = api.StreamTelemetry(
            T.StreamTelemetryRequest(device_ids=ids, fields=fields), metadata=user.md
        )
        await async_wait_until(
            lambda: _positive(listeners(owner_conn)), 30, "the stream's LISTEN connection"
        )
        # The process's listener may be another stream's: let this one's handler read its
        # starting point and subscribe.
        await asyncio.sleep(1)
        pub.publish_all([readings(serial_a, 0, 5, 200.0), readings(serial_b, 0, 3, 100.0)])
        got = await collect(live, 8)
        by_device = {d: [(t, v) for dd, t, v in got if dd == d] for d in ids}
        assert [v for _, v in by_device[ids[0]]] == [200.0, 201.0, 202.0, 203.0, 204.0]
        assert [v for _, v in by_device[ids[1]]] == [100.0, 101.0, 102.0]
        for rows in by_device.values():
            assert [t for t, _ in rows] == sorted(t for t, _ in rows)
            assert rows[0][0] == base * 1000

        # A second stream catches up from a start time, then goes live with the first.
        catch_up = api.StreamTelemetry(
            T.StreamTelemetryRequest(
                device_ids=[ids[0]], fields=fields, start_time=ts_ms(base + 2000)
            ),
            metadata=user.md,
        )
        assert [v for _, _, v in await collect(catch_up, 3)] == [202.0, 203.0, 204.0]
        assert await listeners(owner_conn) == 1, "one LISTEN connection per process"
        pub.publish_all([readings(serial_a, 5, 4, 200.0)])
        later = [v for _, _, v in await collect(live, 4)]
        assert later == [205.0, 206.0, 207.0, 208.0]
        assert [v for _, _, v in await collect(catch_up, 4)] == later
        live.cancel()
        catch_up.cancel()

    await async_wait_until(lambda: _zero(listeners(owner_conn)), 30, "the LISTEN connection closed")
    window = {"start_time": ts_ms(base), "end_time": ts_ms(base + 60_000)}
    query = await api.QueryTelemetry(
        T.QueryTelemetryRequest(device_ids=[ids[0]], fields=fields, **window), metadata=user.md
    )
    (series,) = query.series
    assert list(series.columns[0].doubles) == [200.0 + i for i in range(9)]
    assert list(series.columns[1].ints) == list(range(9))
    aggregate = await api.AggregateTelemetry(
        T.AggregateTelemetryRequest(
            device_ids=ids,
            bucket_width=duration_pb2.Duration(seconds=60),
            aggregations=[
                T.Aggregation(field="voltage_l1", function=T.AGGREGATE_FUNCTION_AVG),
                T.Aggregation(field="uptime_s", function=T.AGGREGATE_FUNCTION_COUNT),
            ],
            **window,
        ),
        metadata=user.md,
    )
    results = {
        s.device_id: (list(s.columns[0].doubles), list(s.columns[1].ints)) for s in aggregate.series
    }
    # base is a whole minute minus nothing: readings sit in one or two minute buckets.
    assert sum(results[ids[0]][1]) == 9
    assert sum(results[ids[1]][1]) == 3
    all_a = sum(a * n for a, n in zip(*results[ids[0]], strict=True)) / 9
    assert all_a == pytest.approx(204.0)


async def _positive(value: Any) -> bool | None:
    return True if await value > 0 else None


async def _zero(value: Any) -> bool | None:
    return True if await value == 0 else None
