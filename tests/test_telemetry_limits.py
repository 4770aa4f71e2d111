"""The cap on one telemetry call's work, and FIRST/LAST without an array per bucket."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import pytest
from google.protobuf import duration_pb2, timestamp_pb2

from lifebox.v1 import telemetry_pb2 as T
from lifebox.v1 import telemetry_pb2_grpc
from lifebox_grpc.runtime.mosquitto import EmbeddedMosquitto
from lifebox_grpc.store import partitions
from lifebox_grpc.store import telemetry as store
from lifebox_grpc.store.pool import tenant_transaction
from tests.helpers import factories
from tests.helpers.grpc import (
    Server,
    close_server,
    error_of,
    make_tenant,
    open_server,
    server_settings,
)
from tests.helpers.services import Database

MINUTE = timedelta(minutes=1)


def ts(value: datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


def _old_first_last_sql(storage: str, aggregates: list[store.Aggregate], months: bool) -> str:
    """The aggregate query as it was: FIRST/LAST from an array of the whole bucket."""
    columns = []
    for i, a in enumerate(aggregates):
        if a.function not in (store.FIRST, store.LAST):
            columns.append(f", {a.sql()} AS a{i}")
            continue
        column = 'e."extra"::text' if a.field == "extra" else f'e."{a.field}"'
        order = "" if a.function == store.FIRST else " DESC"
        columns.append(
            f", (array_agg({column} ORDER BY e.time{order}) "
            f"FILTER (WHERE {column} IS NOT NULL))[1] AS a{i}"
        )
    bucket = store.bucket_sql(storage, calendar_month=months)
    return (
        f"SELECT e.device_id, (extract(epoch FROM {bucket}) * 1000000)::int8 AS t"
        f"{''.join(columns)} FROM telemetry_events e "
        f"WHERE e.device_id = ANY($1::uuid[]) AND e.time >= $2 AND e.time < $3 "
        f"GROUP BY e.device_id, {bucket} ORDER BY e.device_id, {bucket}"
    )


async def test_first_and_last_equal_the_array_form_on_every_kind_of_field(
    storage_database: Database,
) -> None:
    conn = await asyncpg.connect(storage_database.owner_dsn)
    try:
        client = await factories.make_client(conn)
        devices = [(await factories.make_device(conn, client))[0] for _ in range(2)]
        start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=3)
        async with tenant_transaction(conn, None, staff=True):
            # Gaps of every shape: a field unset at a bucket's edges, all through a bucket,
            # set only once; readings at irregular times (37 s apart, across hour buckets).
            await conn.execute(
                """
                INSERT INTO telemetry_events (time, device_id, client_id, voltage_l1,
                    uptime_s, relay_on, status, extra)
                SELECT $3::timestamptz + i * interval '37 seconds', d, $2,
                       CASE WHEN i % 5 IN (0, 4) THEN NULL ELSE i * 1.5 END,
                       CASE WHEN i % 97 < 90 THEN NULL ELSE i END,
                       CASE WHEN i % 3 = 0 THEN NULL ELSE i % 2 = 0 END,
                       CASE WHEN (i / 200) % 2 = 1 THEN NULL ELSE 's' || i END,
                       CASE WHEN i % 7 = 0 THEN jsonb_build_object('k', i) END
                FROM unnest($1::uuid[]) AS d, generate_series(0, 3000) AS i
                """,
                devices,
                client,
                start,
            )
        aggregates = [
            store.Aggregate(field, function)
            for field in ("voltage_l1", "uptime_s", "relay_on", "status", "extra")
            for function in (store.FIRST, store.LAST)
        ] + [store.Aggregate("voltage_l1", store.AVG), store.Aggregate("status", store.COUNT)]
        storage = await partitions.storage_kind(conn)
        end = start + timedelta(days=2)
        async with tenant_transaction(conn, None, staff=True):
            for width in (timedelta(hours=1), None):
                args: list[object] = [devices, start + timedelta(minutes=7), end]
                if width is not None:
                    args.append(width)
                old = await conn.fetch(
                    _old_first_last_sql(storage, aggregates, width is None), *args
                )
                new = await store.aggregate(
                    conn, storage, devices, start + timedelta(minutes=7), end, aggregates,
                    width=width,
                )  # fmt: skip
                assert len(new) >= len(devices)
                assert [tuple(r) for r in new] == [tuple(r) for r in old]
            plan = await conn.fetch(
                "EXPLAIN (VERBOSE) "
                + store.aggregate_sql(storage, aggregates, calendar_month=False),
                devices,
                start,
                end,
                timedelta(hours=1),
            )
        assert not any("array_agg" in row[0] for row in plan), "FIRST/LAST build an array"
    finally:
        await conn.close()


def _aggregate(
    device_ids: list[str], buckets: int, aggregations: int
) -> T.AggregateTelemetryRequest:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    return T.AggregateTelemetryRequest(
        device_ids=device_ids,
        start_time=ts(start),
        end_time=ts(start + buckets * MINUTE),
        bucket_width=duration_pb2.Duration(seconds=60),
        aggregations=[T.Aggregation(field="voltage_l1", function=T.AGGREGATE_FUNCTION_FIRST)]
        * aggregations,
    )


async def test_an_aggregate_past_the_work_cap_is_resource_exhausted_at_the_cap_it_runs(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    tenant = await make_tenant(grpc_server, owner_conn)
    admin = tenant.users["client"]
    device, _ = await factories.make_device(owner_conn, tenant.client_id)
    api = telemetry_pb2_grpc.TelemetryServiceStub(grpc_server.channel)
    cap = grpc_server.settings.telemetry_max_cells_per_call
    assert cap == 500_000, "the documented default"

    # 1 device x 10,000 buckets x 50 aggregations: the cap exactly.
    await api.AggregateTelemetry(_aggregate([str(device)], 10_000, 50), metadata=admin.md)
    # Twice the devices: twice the work, refused before any database work (the other id
    # does not even exist: the cap says nothing about it).
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await api.AggregateTelemetry(
            _aggregate([str(device), str(uuid.uuid4())], 10_000, 50), metadata=admin.md
        )
    code, details = error_of(refused.value)
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
    (violation,) = details["QuotaFailure"].violations
    assert violation.subject == "telemetry:aggregate_cells"
    assert "1000000" in violation.description
    assert str(cap) in violation.description
    assert details["RetryInfo"].retry_delay.seconds >= 1


async def test_query_and_latest_are_capped_by_the_same_setting(
    database: Database, broker: EmbeddedMosquitto, owner_conn: asyncpg.Connection
) -> None:
    server = await open_server(server_settings(database, broker, telemetry_max_cells_per_call=1000))
    try:
        tenant = await make_tenant(server, owner_conn)
        admin = tenant.users["client"]
        device, _ = await factories.make_device(owner_conn, tenant.client_id)
        api = telemetry_pb2_grpc.TelemetryServiceStub(server.channel)
        nine = list(store.KNOWN_FIELDS[:9])
        window = {
            "start_time": ts(datetime(2025, 1, 1, tzinfo=UTC)),
            "end_time": ts(datetime(2025, 1, 2, tzinfo=UTC)),
        }
        # 100 rows x (9 fields + time) = 1,000 values: allowed; one field more is not.
        await api.QueryTelemetry(
            T.QueryTelemetryRequest(device_ids=[str(device)], fields=nine, page_size=100, **window),
            metadata=admin.md,
        )
        too_much = {
            "telemetry:query_cells": api.QueryTelemetry(
                T.QueryTelemetryRequest(
                    device_ids=[str(device)], fields=[*nine, "status"], page_size=100, **window
                ),
                metadata=admin.md,
            ),
            # 30 devices x 37 fields.
            "telemetry:latest_cells": api.GetLatestTelemetry(
                T.GetLatestTelemetryRequest(device_ids=[str(uuid.uuid4()) for _ in range(30)]),
                metadata=admin.md,
            ),
        }
        for subject, call in too_much.items():
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call
            code, details = error_of(refused.value)
            assert code is grpc.StatusCode.RESOURCE_EXHAUSTED, subject
            assert details["QuotaFailure"].violations[0].subject == subject
            assert "RetryInfo" in details
    finally:
        await close_server(server)
