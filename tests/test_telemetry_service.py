"""TelemetryService reads over gRPC: raw pages, buckets, latest, catalogue, data points."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf import duration_pb2, timestamp_pb2

from lifebox.v1 import devices_pb2, devices_pb2_grpc, telemetry_pb2, telemetry_pb2_grpc
from lifebox_grpc.store.pool import tenant_transaction
from tests.helpers import factories
from tests.helpers.grpc import Server, make_tenant, violations

T = telemetry_pb2
HOUR = timedelta(hours=1)


def stub(server: Server) -> telemetry_pb2_grpc.TelemetryServiceStub:
    return telemetry_pb2_grpc.TelemetryServiceStub(server.channel)


def ts(value: datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


def micros(value: datetime) -> int:
    return (value - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


async def insert_series(
    conn: asyncpg.Connection,
    client_id: uuid.UUID,
    device_id: uuid.UUID,
    start: datetime,
    count: int,
    step: timedelta,
) -> None:
    """Readings i = 0..count-1 at start + i*step: voltage_l1 = i, uptime_s = i, relay_on =
    i even, status = 's<i>', temperature_c null on every third."""
    async with tenant_transaction(conn, None, staff=True):
        await conn.execute(
            """
            INSERT INTO telemetry_events (time, device_id, client_id, voltage_l1, uptime_s,
                                          relay_on, status, temperature_c)
            SELECT $3::timestamptz + i * $4::interval, $1, $2, i, i, i % 2 = 0, 's' || i,
                   CASE WHEN i % 3 = 0 THEN NULL ELSE i * 0.5 END
            FROM generate_series(0, $5 - 1) AS i
            """,
            device_id,
            client_id,
            start,
            step,
            count,
        )


def column(series: T.Series, field: str, function: int = 0) -> list[Any]:
    for col in series.columns:
        if col.field == field and col.function == function:
            values: list[Any] = list(
                {
                    T.FIELD_TYPE_DOUBLE: col.doubles,
                    T.FIELD_TYPE_INT64: col.ints,
                    T.FIELD_TYPE_BOOL: col.bools,
                    T.FIELD_TYPE_STRING: col.strings,
                }[col.type]
            )
            for i in col.null_indexes:
                values[i] = None
            return values
    raise AssertionError(f"no column {field}/{function}")


async def code_of(call: Awaitable[Any]) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


@pytest.fixture
async def fleet(grpc_server: Server, owner_conn: asyncpg.Connection) -> Any:
    tenant = await make_tenant(grpc_server, owner_conn)
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=2)
    devices = [(await factories.make_device(owner_conn, tenant.client_id))[0] for _ in range(3)]
    for device_id in devices[:2]:
        await insert_series(
            owner_conn, tenant.client_id, device_id, start, 360, timedelta(minutes=1)
        )
    return tenant, devices, start


async def test_query_values_fields_order_and_nulls(grpc_server: Server, fleet: Any) -> None:
    tenant, devices, start = fleet
    admin = tenant.users["client"]
    reply = await stub(grpc_server).QueryTelemetry(
        T.QueryTelemetryRequest(
            device_ids=[str(devices[0])],
            start_time=ts(start + timedelta(minutes=10)),
            end_time=ts(start + timedelta(minutes=15)),
            fields=["voltage_l1", "uptime_s", "relay_on", "status", "temperature_c"],
        ),
        metadata=admin.md,
    )
    (series,) = reply.series
    assert series.device_id == str(devices[0])
    assert list(series.time_micros) == [micros(start + timedelta(minutes=i)) for i in range(10, 15)]
    assert column(series, "voltage_l1") == [10.0, 11.0, 12.0, 13.0, 14.0]
    assert column(series, "uptime_s") == [10, 11, 12, 13, 14]
    assert column(series, "relay_on") == [True, False, True, False, True]
    assert column(series, "status") == ["s10", "s11", "s12", "s13", "s14"]
    assert column(series, "temperature_c") == [5.0, 5.5, None, 6.5, 7.0]
    assert not reply.next_page_token

    newest_first = await stub(grpc_server).QueryTelemetry(
        T.QueryTelemetryRequest(
            device_ids=[str(d) for d in devices],
            start_time=ts(start),
            end_time=ts(start + timedelta(minutes=3)),
            fields=["uptime_s"],
            descending=True,
        ),
        metadata=admin.md,
    )
    assert [s.device_id for s in newest_first.series] == sorted(
        (str(d) for d in devices[:2]), reverse=True
    )
    assert all(column(s, "uptime_s") == [2, 1, 0] for s in newest_first.series)

    # A visible device without readings in the range: an empty answer, not NOT_FOUND.
    quiet = await stub(grpc_server).QueryTelemetry(
        T.QueryTelemetryRequest(
            device_ids=[str(devices[2])], start_time=ts(start), end_time=ts(start + HOUR)
        ),
        metadata=admin.md,
    )
    assert list(quiet.series) == []
    assert not quiet.next_page_token


async def test_query_pages_have_no_duplicates_or_gaps_while_rows_arrive(
    grpc_server: Server, owner_conn: asyncpg.Connection, fleet: Any
) -> None:
    tenant, devices, start = fleet
    admin = tenant.users["client"]
    end = start + timedelta(days=1)
    seen: list[tuple[str, int]] = []
    token = ""
    added = 0

    async def writer() -> None:
        # New readings land before, inside and after the pages already read.
        nonlocal added
        while True:
            offset = timedelta(seconds=30 + 60 * (added % 300))
            for device_id in devices:
                await factories.make_reading(
                    owner_conn, tenant.client_id, device_id, start + offset, uptime_s=-1
                )
            added += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(writer())
    try:
        while True:
            page = await stub(grpc_server).QueryTelemetry(
                T.QueryTelemetryRequest(
                    device_ids=[str(d) for d in devices],
                    start_time=ts(start),
                    end_time=ts(end),
                    fields=["uptime_s"],
                    page_size=47,
                    page_token=token,
                ),
                metadata=admin.md,
            )
            assert sum(len(s.time_micros) for s in page.series) <= 47
            for s in page.series:
                seen += [(s.device_id, t) for t in s.time_micros]
            token = page.next_page_token
            if not token:
                break
    finally:
        task.cancel()
    assert added > 0
    assert len(seen) == len(set(seen)), "a reading was returned twice"
    assert seen == sorted(seen), "pages are out of order"
    original = {
        (str(d), micros(start + timedelta(minutes=i))) for d in devices[:2] for i in range(360)
    }
    assert original <= set(seen), "a reading that existed throughout was skipped"


async def test_aggregate_hourly_and_monthly_values(grpc_server: Server, fleet: Any) -> None:
    tenant, devices, start = fleet
    admin = tenant.users["client"]
    functions = (
        T.AGGREGATE_FUNCTION_AVG,
        T.AGGREGATE_FUNCTION_MIN,
        T.AGGREGATE_FUNCTION_MAX,
        T.AGGREGATE_FUNCTION_SUM,
        T.AGGREGATE_FUNCTION_COUNT,
        T.AGGREGATE_FUNCTION_FIRST,
        T.AGGREGATE_FUNCTION_LAST,
    )
    reply = await stub(grpc_server).AggregateTelemetry(
        T.AggregateTelemetryRequest(
            device_ids=[str(devices[0])],
            start_time=ts(start),
            end_time=ts(start + timedelta(hours=6)),
            bucket_width=duration_pb2.Duration(seconds=3600),
            aggregations=[T.Aggregation(field="voltage_l1", function=f) for f in functions]
            + [
                T.Aggregation(field="temperature_c", function=T.AGGREGATE_FUNCTION_COUNT),
                T.Aggregation(field="status", function=T.AGGREGATE_FUNCTION_LAST),
            ],
        ),
        metadata=admin.md,
    )
    (series,) = reply.series
    assert list(series.time_micros) == [micros(start + h * HOUR) for h in range(6)]
    hours = [list(range(60 * h, 60 * h + 60)) for h in range(6)]
    assert column(series, "voltage_l1", T.AGGREGATE_FUNCTION_AVG) == [sum(v) / 60 for v in hours]
    assert column(series, "voltage_l1", T.AGGREGATE_FUNCTION_MIN) == [v[0] for v in hours]
    assert column(series, "voltage_l1", T.AGGREGATE_FUNCTION_MAX) == [v[-1] for v in hours]
    assert column(series, "voltage_l1", T.AGGREGATE_FUNCTION_SUM) == [sum(v) for v in hours]
    assert column(series, "voltage_l1", T.AGGREGATE_FUNCTION_COUNT) == [60] * 6
    assert column(series, "voltage_l1", T.AGGREGATE_FUNCTION_FIRST) == [v[0] for v in hours]
    assert column(series, "voltage_l1", T.AGGREGATE_FUNCTION_LAST) == [v[-1] for v in hours]
    assert column(series, "temperature_c", T.AGGREGATE_FUNCTION_COUNT) == [40] * 6
    assert column(series, "status", T.AGGREGATE_FUNCTION_LAST) == [f"s{v[-1]}" for v in hours]

    monthly = await stub(grpc_server).AggregateTelemetry(
        T.AggregateTelemetryRequest(
            device_ids=[str(d) for d in devices],
            start_time=ts(start - timedelta(days=40)),
            end_time=ts(start + timedelta(days=1)),
            calendar_month=True,
            aggregations=[T.Aggregation(field="uptime_s", function=T.AGGREGATE_FUNCTION_SUM)],
        ),
        metadata=admin.md,
    )
    assert len(monthly.series) == 2  # the third device has no readings
    for s in monthly.series:
        first_of_month = start.replace(day=1, hour=0)
        assert s.time_micros[-1] == micros(first_of_month)
        assert sum(column(s, "uptime_s", T.AGGREGATE_FUNCTION_SUM)) == sum(range(360))


async def test_latest_of_many_devices_in_request_order(grpc_server: Server, fleet: Any) -> None:
    tenant, devices, start = fleet
    reply = await stub(grpc_server).GetLatestTelemetry(
        T.GetLatestTelemetryRequest(
            device_ids=[str(devices[2]), str(devices[1]), str(devices[0])],
            fields=["uptime_s", "status"],
        ),
        metadata=tenant.users["client"].md,
    )
    assert list(reply.device_ids) == [str(devices[1]), str(devices[0])]
    assert list(reply.time_micros) == [micros(start + timedelta(minutes=359))] * 2
    rows = T.Series(columns=reply.columns)
    assert column(rows, "uptime_s") == [359, 359]
    assert column(rows, "status") == ["s359", "s359"]


async def test_bad_telemetry_requests_are_invalid_with_field_violations(
    grpc_server: Server, fleet: Any
) -> None:
    tenant, devices, start = fleet
    md = tenant.users["client"].md
    api = stub(grpc_server)
    one = [str(devices[0])]
    with pytest.raises(grpc.aio.AioRpcError) as inverted:
        await api.QueryTelemetry(
            T.QueryTelemetryRequest(
                device_ids=one,
                start_time=ts(start),
                end_time=ts(start - HOUR),
                fields=["voltage_l1", "nope; DROP TABLE devices"],
                page_size=10_001,
            ),
            metadata=md,
        )
    assert inverted.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(violations(inverted.value)) == {"end_time", "fields[1]", "page_size"}

    def aggregate(**kwargs: Any) -> Awaitable[Any]:
        request = T.AggregateTelemetryRequest(
            device_ids=one,
            start_time=ts(start),
            end_time=ts(start + timedelta(days=30)),
            aggregations=[T.Aggregation(field="voltage_l1", function=T.AGGREGATE_FUNCTION_AVG)],
        )
        for key, value in kwargs.items():
            if key == "aggregations":
                del request.aggregations[:]
                request.aggregations.extend(value)
            elif key == "bucket_width":
                request.bucket_width.CopyFrom(value)
            else:
                setattr(request, key, value)
        return api.AggregateTelemetry(request, metadata=md)  # type: ignore[no-any-return]

    for bad, field in (
        ({"bucket_width": duration_pb2.Duration(seconds=0)}, "bucket_width"),
        ({"bucket_width": duration_pb2.Duration(seconds=59)}, "bucket_width"),
        ({"bucket_width": duration_pb2.Duration(seconds=40 * 86400)}, "bucket_width"),
        ({}, "bucket_width"),
        (
            {
                "bucket_width": duration_pb2.Duration(seconds=3600),
                "aggregations": [T.Aggregation(field="status", function=T.AGGREGATE_FUNCTION_AVG)],
            },
            "aggregations[0].function",
        ),
        (
            {
                "bucket_width": duration_pb2.Duration(seconds=3600),
                "aggregations": [T.Aggregation(field="bogus", function=T.AGGREGATE_FUNCTION_MAX)],
            },
            "aggregations[0].field",
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await aggregate(**bad)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad
        assert field in violations(err.value), (bad, violations(err.value))
    with pytest.raises(grpc.aio.AioRpcError) as too_many:
        await aggregate(bucket_width=duration_pb2.Duration(seconds=60))
    described = violations(too_many.value)["bucket_width"]
    assert "43200 buckets" in described
    assert "at least 260s" in described
    with pytest.raises(grpc.aio.AioRpcError) as no_devices:
        await api.GetLatestTelemetry(T.GetLatestTelemetryRequest(), metadata=md)
    assert "device_ids" in violations(no_devices.value)


async def test_telemetry_is_not_found_across_tenants_and_outside_assignments(
    grpc_server: Server, owner_conn: asyncpg.Connection, fleet: Any
) -> None:
    tenant, devices, start = fleet
    away = await make_tenant(grpc_server, owner_conn)
    api = stub(grpc_server)
    ids = [str(devices[0])]
    window = {"start_time": ts(start), "end_time": ts(start + HOUR)}
    calls = (
        lambda md: api.QueryTelemetry(
            T.QueryTelemetryRequest(device_ids=ids, **window), metadata=md
        ),
        lambda md: api.AggregateTelemetry(
            T.AggregateTelemetryRequest(
                device_ids=ids,
                bucket_width=duration_pb2.Duration(seconds=600),
                aggregations=[T.Aggregation(field="uptime_s", function=T.AGGREGATE_FUNCTION_MAX)],
                **window,
            ),
            metadata=md,
        ),
        lambda md: api.GetLatestTelemetry(T.GetLatestTelemetryRequest(device_ids=ids), metadata=md),
        lambda md: api.ListDataPoints(
            T.ListDataPointsRequest(device_id=ids[0], **window), metadata=md
        ),
    )
    for call in calls:
        for who in (away.users["client"], away.users["viewer"], tenant.users["viewer"]):
            assert await code_of(call(who.md)) == grpc.StatusCode.NOT_FOUND
    stream = api.StreamTelemetry(
        T.StreamTelemetryRequest(device_ids=ids), metadata=away.users["client"].md
    )
    with pytest.raises(grpc.aio.AioRpcError) as hidden:
        async for _ in stream:
            pass
    assert hidden.value.code() == grpc.StatusCode.NOT_FOUND

    # Assigned, the viewer reads it.
    await devices_pb2_grpc.DeviceServiceStub(grpc_server.channel).AssignDevice(
        devices_pb2.AssignDeviceRequest(
            device_id=ids[0], user_id=str(tenant.users["viewer"].user_id)
        ),
        metadata=tenant.users["client"].md,
    )
    for call in calls:
        assert await code_of(call(tenant.users["viewer"].md)) == grpc.StatusCode.OK


async def test_unknown_field_catalogue_and_data_points(
    grpc_server: Server, owner_conn: asyncpg.Connection, fleet: Any
) -> None:
    tenant, devices, start = fleet
    away = await make_tenant(grpc_server, owner_conn)
    async with tenant_transaction(owner_conn, None, staff=True):
        for client, name in (
            (tenant.client_id, "mood"),
            (tenant.client_id, "aa_first"),
            (away.client_id, "secret"),
        ):
            await owner_conn.execute(
                "INSERT INTO unknown_field_catalog (client_id, field_name, inferred_type, "
                "example_value) VALUES ($1, $2, 'string', '\"ok\"')",
                client,
                name,
            )
        await owner_conn.execute(
            "INSERT INTO device_data_points (time, device_id, client_id, metric, value, unit) "
            "SELECT $3::timestamptz + i * interval '1 minute', $1, $2, m, i, 'kWh' "
            "FROM generate_series(0, 4) i, unnest(ARRAY['energy', 'cost']) m",
            devices[0],
            tenant.client_id,
            start,
        )
    api = stub(grpc_server)
    md = tenant.users["client"].md
    first = await api.ListUnknownFields(T.ListUnknownFieldsRequest(page_size=1), metadata=md)
    rest = await api.ListUnknownFields(
        T.ListUnknownFieldsRequest(page_token=first.next_page_token), metadata=md
    )
    names = [f.field for f in [*first.fields, *rest.fields]]
    assert names == ["aa_first", "mood"]
    assert first.fields[0].example_json == '"ok"'
    points = await api.ListDataPoints(
        T.ListDataPointsRequest(
            device_id=str(devices[0]),
            metric="energy",
            start_time=ts(start + timedelta(minutes=1)),
            end_time=ts(start + HOUR),
            page_size=3,
        ),
        metadata=md,
    )
    assert [(p.metric, p.value, p.unit) for p in points.points] == [
        ("energy", v, "kWh") for v in (1, 2, 3)
    ]
    more = await api.ListDataPoints(
        T.ListDataPointsRequest(
            device_id=str(devices[0]),
            metric="energy",
            start_time=ts(start + timedelta(minutes=1)),
            end_time=ts(start + HOUR),
            page_size=3,
            page_token=points.next_page_token,
        ),
        metadata=md,
    )
    assert [p.value for p in more.points] == [4]
