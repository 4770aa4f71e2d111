"""GetPageData against the separate TelemetryService calls it replaces, in one run, side by
side. Asserts nothing.

    .venv/bin/python benchmarks/page_data.py [--rounds 40] [--hours 6] [--every 10]

A fresh PostgreSQL cluster (the test suite's launcher) and `lifebox serve` as its own
process; one tenant with 20 devices holding a reading every ``--every`` seconds over the
last ``--hours`` hours (and as many before). One page of 12 widgets over those devices:
4 TIME_SERIES (5 devices, 2 aggregates, 5-minute buckets), 2 STAT (10 devices), 2 GAUGE,
2 TABLE (10 devices, 4 fields), 1 MAP (20 devices), 1 TEXT. The widgets replace 11
TelemetryService calls (AggregateTelemetry for charts and stats, GetLatestTelemetry for
gauges, tables and the map). Each round makes one GetPageData call and the 11 calls one
after the other (the order alternates between rounds), on one channel over loopback, each
timed at the client from send to decoded reply: that is the server's time plus loopback
and the client's decoding, the same for both sides. Prints the median and p90 of each
side and their ratio (the issue's target: GetPageData <= 1.3 x the sum).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lifebox.v1 import auth_pb2, auth_pb2_grpc, dashboards_pb2_grpc, telemetry_pb2_grpc
from lifebox.v1 import dashboards_pb2 as pb
from lifebox.v1 import telemetry_pb2 as tpb
from lifebox_grpc.auth.passwords import hash_password
from lifebox_grpc.runtime.ports import free_port
from tests.helpers import factories
from tests.helpers.dashboards import agg, hours, minutes, seed_readings, ts
from tests.helpers.services import running_database

sys.path.insert(0, str(Path(__file__).parent))
from api import start_serve

PASSWORD = "bench password " + "x" * 8
EMAIL = "dash-bench@lifebox.local"


async def load(
    owner_dsn: str, span: timedelta, every: timedelta
) -> tuple[uuid.UUID, list[uuid.UUID]]:
    conn = await asyncpg.connect(owner_dsn)
    try:
        client = await factories.make_client(conn)
        await factories.make_user(
            conn, client, role="client", email=EMAIL, password_hash=hash_password(PASSWORD)
        )
        devices = [(await factories.make_device(conn, client))[0] for _ in range(20)]
        end = datetime.now(UTC)
        rows = await seed_readings(conn, client, devices, end - 2 * span, end, every)
        await conn.execute("ANALYZE telemetry_events")
        print(f"  {rows} readings of 20 devices", file=sys.stderr)
        return client, devices
    finally:
        await conn.close()


async def wait_serving(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + 60
    while True:
        try:
            reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=2)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.aio.AioRpcError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("serve did not become SERVING")
        await asyncio.sleep(0.2)


def widgets(ids: list[str]) -> list[pb.Widget]:
    aggs = [
        agg("voltage_l1", tpb.AGGREGATE_FUNCTION_AVG),
        agg("temperature_c", tpb.AGGREGATE_FUNCTION_MAX),
    ]
    out = [
        pb.Widget(type=pb.WIDGET_TYPE_TIME_SERIES, time_series=pb.TimeSeriesConfig(
            device_ids=ids[5 * i: 5 * i + 5], aggregations=aggs, bucket_width=minutes(5)))
        for i in range(4)
    ]  # fmt: skip
    out += [
        pb.Widget(type=pb.WIDGET_TYPE_STAT, stat=pb.StatConfig(
            device_ids=ids[10 * i: 10 * i + 10],
            aggregation=agg("voltage_l1", tpb.AGGREGATE_FUNCTION_AVG)))
        for i in range(2)
    ]  # fmt: skip
    out += [
        pb.Widget(type=pb.WIDGET_TYPE_GAUGE, gauge=pb.GaugeConfig(
            device_id=ids[i], field="temperature_c", min=0, max=50))
        for i in range(2)
    ]  # fmt: skip
    fields = ["voltage_l1", "temperature_c", "relay_on", "status"]
    out += [
        pb.Widget(type=pb.WIDGET_TYPE_TABLE, table=pb.TableConfig(
            device_ids=ids[10 * i: 10 * i + 10], fields=fields))
        for i in range(2)
    ]  # fmt: skip
    out.append(pb.Widget(type=pb.WIDGET_TYPE_MAP, map=pb.MapConfig(device_ids=ids)))
    out.append(pb.Widget(type=pb.WIDGET_TYPE_TEXT, text=pb.TextConfig(markdown="# Plant")))
    return out


def separate_calls(
    telemetry: telemetry_pb2_grpc.TelemetryServiceStub, md: Any, page: list[pb.Widget],
    start: datetime, end: datetime,
) -> list[Callable[[], Awaitable[Any]]]:  # fmt: skip
    """The TelemetryService call each data widget replaces."""
    span = hours(int((end - start).total_seconds() // 3600))
    calls: list[Callable[[], Awaitable[Any]]] = []
    for w in page:
        request: Any
        if w.type == pb.WIDGET_TYPE_TIME_SERIES:
            c = w.time_series
            request = tpb.AggregateTelemetryRequest(
                device_ids=c.device_ids, start_time=ts(start), end_time=ts(end),
                bucket_width=c.bucket_width, aggregations=c.aggregations,
            )  # fmt: skip
            calls.append(lambda r=request: telemetry.AggregateTelemetry(r, metadata=md))
        elif w.type == pb.WIDGET_TYPE_STAT:
            request = tpb.AggregateTelemetryRequest(
                device_ids=w.stat.device_ids, start_time=ts(start), end_time=ts(end),
                bucket_width=span, aggregations=[w.stat.aggregation],
            )  # fmt: skip
            calls.append(lambda r=request: telemetry.AggregateTelemetry(r, metadata=md))
        elif w.type in (pb.WIDGET_TYPE_GAUGE, pb.WIDGET_TYPE_TABLE, pb.WIDGET_TYPE_MAP):
            if w.type == pb.WIDGET_TYPE_GAUGE:
                devs, fields = [w.gauge.device_id], [w.gauge.field]
            elif w.type == pb.WIDGET_TYPE_TABLE:
                devs, fields = list(w.table.device_ids), list(w.table.fields)
            else:
                devs, fields = list(w.map.device_ids), ["latitude", "longitude"]
            request = tpb.GetLatestTelemetryRequest(device_ids=devs, fields=fields)
            calls.append(lambda r=request: telemetry.GetLatestTelemetry(r, metadata=md))
    return calls


async def measure(target: str, devices: list[uuid.UUID], span: timedelta, rounds: int) -> None:
    channel = grpc.aio.insecure_channel(target)
    await wait_serving(channel)
    login = await auth_pb2_grpc.AuthServiceStub(channel).Login(
        auth_pb2.LoginRequest(email=EMAIL, password=PASSWORD)
    )
    md = (("authorization", f"Bearer {login.tokens.access_token}"),)
    dash = dashboards_pb2_grpc.DashboardServiceStub(channel)
    telemetry = telemetry_pb2_grpc.TelemetryServiceStub(channel)
    ids = [str(d) for d in devices]
    page = (
        await dash.CreatePage(
            pb.CreatePageRequest(page=pb.QuickViewPage(title="Bench", device_ids=ids)), metadata=md
        )
    ).page
    made = []
    for i, w in enumerate(widgets(ids)):
        w.page_id = page.id
        w.position.CopyFrom(pb.WidgetPosition(x=i % 4 * 3, y=i // 4 * 3, width=3, height=3))
        made.append((await dash.CreateWidget(pb.CreateWidgetRequest(widget=w), metadata=md)).widget)
    # An epoch-aligned window of whole hours, so a STAT's range is one AggregateTelemetry bucket.
    hours_n = int(span.total_seconds() // 3600)
    now = datetime.now(UTC)
    end = datetime(now.year, now.month, now.day, tzinfo=UTC) + timedelta(
        hours=(now.hour // hours_n) * hours_n
    )
    start = end - timedelta(hours=hours_n)
    request = pb.GetPageDataRequest(page_id=page.id, start_time=ts(start), end_time=ts(end))
    calls = separate_calls(telemetry, md, made, start, end)

    async def one_page() -> float:
        began = time.perf_counter()
        await dash.GetPageData(request, metadata=md)
        return time.perf_counter() - began

    async def separately() -> float:
        total = 0.0
        for call in calls:
            began = time.perf_counter()
            await call()
            total += time.perf_counter() - began
        return total

    for _ in range(3):  # warm up: prepared statements, caches
        await one_page()
        await separately()
    page_ms: list[float] = []
    sum_ms: list[float] = []
    for i in range(rounds):
        if i % 2:
            page_ms.append(await one_page() * 1000)
            sum_ms.append(await separately() * 1000)
        else:
            sum_ms.append(await separately() * 1000)
            page_ms.append(await one_page() * 1000)
    await channel.close()

    def p90(xs: list[float]) -> float:
        return statistics.quantiles(xs, n=10)[-1]

    print(f"\nGetPageData: 12 widgets over 20 devices, {hours_n} h range, {rounds} rounds")
    print(f"{'':38} {'median ms':>10} {'p90 ms':>10}")
    print(f"{'GetPageData (1 call)':38} {statistics.median(page_ms):10.2f} {p90(page_ms):10.2f}")
    label = f"sum of {len(calls)} TelemetryService calls"
    print(f"{label:38} {statistics.median(sum_ms):10.2f} {p90(sum_ms):10.2f}")
    ratios = [p / s for p, s in zip(page_ms, sum_ms, strict=True)]
    print(
        f"ratio GetPageData / sum: median {statistics.median(ratios):.2f}x "
        f"(per round; target <= 1.3x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--hours", type=int, default=6, help="range (a divisor of 24)")
    parser.add_argument("--every", type=float, default=10.0, help="seconds between readings")
    args = parser.parse_args()
    span = timedelta(hours=args.hours)
    with running_database() as db:
        print("loading data...", file=sys.stderr)
        _, devices = asyncio.run(load(db.owner_dsn, span, timedelta(seconds=args.every)))
        port = free_port()
        with tempfile.TemporaryDirectory(prefix="lifebox-bench-") as home:
            serve = start_serve(db, port, Path(home))
            try:
                asyncio.run(measure(f"127.0.0.1:{port}", devices, span, args.rounds))
            finally:
                serve.terminate()
                serve.wait(30)


if __name__ == "__main__":
    main()
