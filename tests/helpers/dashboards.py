"""DashboardService in tests: stubs, assignments, seeded readings and pages made by RPC."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from google.protobuf import duration_pb2, timestamp_pb2

from lifebox.v1 import dashboards_pb2 as pb
from lifebox.v1 import dashboards_pb2_grpc, telemetry_pb2
from lifebox_grpc.store.pool import tenant_transaction
from tests.helpers.grpc import Server

Stub = dashboards_pb2_grpc.DashboardServiceStub


def stub(server: Server) -> Stub:
    return dashboards_pb2_grpc.DashboardServiceStub(server.channel)


async def assign(
    conn: asyncpg.Connection, client: uuid.UUID, user: uuid.UUID, device: uuid.UUID,
    level: str = "view",
) -> None:  # fmt: skip
    async with tenant_transaction(conn, None, staff=True):
        await conn.execute(
            "INSERT INTO user_device_assignments (client_id, user_id, device_id, access_level) "
            "VALUES ($1, $2, $3, $4)",
            client,
            user,
            device,
            level,
        )


def hour_window(hours_back: int = 1) -> tuple[datetime, datetime]:
    """An epoch-aligned hour that has passed: [start, start + 1 h)."""
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start = now - timedelta(hours=hours_back)
    return start, start + timedelta(hours=1)


async def seed_readings(
    conn: asyncpg.Connection,
    client: uuid.UUID,
    devices: Sequence[uuid.UUID],
    start: datetime,
    end: datetime,
    every: timedelta = timedelta(minutes=1),
) -> int:
    """Readings of every device every ``every`` in [start, end): voltage, temperature (null
    every 7th), relay, position, uptime, status. Returns how many rows."""
    async with tenant_transaction(conn, None, staff=True):
        status = await conn.execute(
            "INSERT INTO telemetry_events (time, device_id, client_id, voltage_l1, "
            "temperature_c, relay_on, latitude, longitude, uptime_s, status) "
            "SELECT t, d.id, $2, 220 + d.n + extract(minute FROM t), "
            "CASE WHEN (extract(epoch FROM t)::int8 / 60) % 7 = 0 THEN NULL "
            "ELSE 20 + (extract(epoch FROM t)::int8 / 60) % 10 END, "
            "(extract(epoch FROM t)::int8 / 60) % 2 = 0, 30 + d.n / 100.0, 31 + d.n / 100.0, "
            "extract(epoch FROM t)::int8 % 100000, 'ok' "
            "FROM unnest($1::uuid[]) WITH ORDINALITY AS d(id, n), "
            "generate_series($3::timestamptz, $4::timestamptz - interval '1 microsecond', $5) t",
            list(devices),
            client,
            start,
            end,
            every,
        )
    return int(status.split()[-1])


def ts(value: datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


def agg(field: str, function: int) -> telemetry_pb2.Aggregation:
    return telemetry_pb2.Aggregation(field=field, function=function)  # type: ignore[arg-type]


def hours(n: int) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=3600 * n)


def minutes(n: int) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=60 * n)


POS = pb.WidgetPosition(x=0, y=0, width=4, height=3)


async def make_page(
    s: Stub, md: Any, devices: Sequence[uuid.UUID] = (), templates: Sequence[uuid.UUID] = (),
    title: str = "Plant",
) -> pb.QuickViewPage:  # fmt: skip
    reply = await s.CreatePage(
        pb.CreatePageRequest(
            page=pb.QuickViewPage(
                title=title,
                device_ids=[str(d) for d in devices],
                command_template_ids=[str(t) for t in templates],
            )
        ),
        metadata=md,
    )
    return reply.page


async def make_widget(s: Stub, md: Any, page_id: str, **config: Any) -> pb.Widget:
    """A widget of the type its one config keyword names (time_series=..., gauge=...)."""
    ((name, value),) = config.items()
    kind = getattr(pb, f"WIDGET_TYPE_{name.upper()}")
    widget = pb.Widget(page_id=page_id, type=kind, title=name, position=POS, **{name: value})
    return (await s.CreateWidget(pb.CreateWidgetRequest(widget=widget), metadata=md)).widget
