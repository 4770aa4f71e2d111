"""The reads of GetPageData that TelemetryService has no query for: one aggregate over a
whole range per device (STAT widgets), and open alarm events counted per device and
severity (ALARM_LIST widgets). Latest values and bucketed series are TelemetryService's own
queries (:mod:`lifebox_grpc.store.telemetry`)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import asyncpg

from lifebox_grpc.store.telemetry import Aggregate


async def range_aggregates(
    conn: asyncpg.Connection,
    device_ids: Sequence[uuid.UUID],
    start: datetime,
    end: datetime,
    aggregates: Sequence[Aggregate],
) -> list[asyncpg.Record]:
    """(device_id, start micros, a0, a1, ...) per device with readings in [start, end),
    by device id: the same aggregate expressions as AggregateTelemetry's buckets, over one
    bucket that is the whole range."""
    columns = "".join(f", {a.sql()} AS a{i}" for i, a in enumerate(aggregates))
    return list(
        await conn.fetch(
            "SELECT e.device_id, (extract(epoch FROM $2::timestamptz) * 1000000)::int8 AS t"
            f"{columns} FROM telemetry_events e "
            "WHERE e.device_id = ANY($1::uuid[]) AND e.time >= $2 AND e.time < $3 "
            "GROUP BY e.device_id ORDER BY e.device_id",
            list(device_ids),
            start,
            end,
        )
    )


async def open_alarm_counts(
    conn: asyncpg.Connection, device_ids: Sequence[uuid.UUID]
) -> list[asyncpg.Record]:
    """(device_id, severity, open, unacknowledged) of the devices' open alarm events."""
    return list(
        await conn.fetch(
            "SELECT device_id, severity, count(*) AS open, "
            "count(*) FILTER (WHERE status = 'active_unack') AS unacknowledged "
            "FROM alarm_events WHERE device_id = ANY($1::uuid[]) "
            "AND status IN ('active_unack', 'active_ack') "
            "GROUP BY device_id, severity ORDER BY device_id, severity",
            list(device_ids),
        )
    )
