"""SQL of the ingest path. Runs as ``lifebox_ingest`` (BYPASSRLS, narrow grants), so every
statement names its tenant and device explicitly: the topic, never the payload, decides them.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from lifebox_grpc.store.telemetry_notices import CHANNEL

TELEMETRY_TABLE = "telemetry_events"


@dataclass(frozen=True)
class DeviceRef:
    """What ingest needs to know about the device a topic names."""

    device_id: uuid.UUID
    client_id: uuid.UUID
    status: str
    client_status: str
    device_type: str = "generic"  # calculated metrics (issue 17): formulas scope by type

    @property
    def accepts_data(self) -> bool:
        return self.status in ("provisioned", "active") and self.client_status == "active"


@dataclass(frozen=True)
class RejectRow:
    client_id: uuid.UUID | None
    serial: str
    topic: str
    received_at: datetime
    code: str
    reason: str
    raw: bytes
    raw_truncated: bool
    reading_index: int | None


@dataclass(frozen=True)
class AlarmRow:
    client_id: uuid.UUID
    device_id: uuid.UUID
    code: str
    severity: str
    message: str | None
    raised_at: datetime
    cleared_at: datetime | None
    payload: str  # JSON text


@dataclass(frozen=True)
class AckRow:
    index: int  # position in the batch, to reject it when the command doesn't match
    client_id: uuid.UUID
    device_id: uuid.UUID
    command_id: uuid.UUID
    status: str
    result: str | None  # JSON text
    device_time: datetime | None


@dataclass(frozen=True)
class CatalogRow:
    client_id: uuid.UUID
    name: str
    json_type: str
    count: int
    example: str  # JSON text
    seen_at: datetime


_DEVICES_BY_SERIAL = """
SELECT d.serial, d.id, d.client_id, d.status, c.status AS client_status, d.device_type
FROM devices d JOIN clients c ON c.id = d.client_id
WHERE d.serial = ANY($1::text[])
"""


async def devices_by_serial(
    conn: asyncpg.Connection, serials: Sequence[str]
) -> dict[str, DeviceRef]:
    rows = await conn.fetch(_DEVICES_BY_SERIAL, list(serials))
    return {
        r["serial"]: DeviceRef(
            r["id"], r["client_id"], r["status"], r["client_status"], r["device_type"]
        )
        for r in rows
    }


async def current_xact_id(conn: asyncpg.Connection) -> int:
    """The open transaction's id (64-bit, epoch included): the ``xmin`` of the rows it writes
    at top level is its low 32 bits."""
    xid: int = await conn.fetchval("SELECT pg_current_xact_id()::text::int8")
    return xid


async def copy_telemetry(conn: asyncpg.Connection, data: bytes, columns: Sequence[str]) -> None:
    """The fast path: binary COPY straight into the table (no deduplication cost)."""
    await conn.copy_to_table(
        TELEMETRY_TABLE, source=_BytesSource(data), columns=list(columns), format="binary"
    )


async def copy_telemetry_deduplicated(
    conn: asyncpg.Connection, data: bytes, column_types: Sequence[tuple[str, str]]
) -> int:
    """The redelivery path: COPY into a staging table, then INSERT … ON CONFLICT DO NOTHING.

    Returns the rows actually inserted (the others were committed before)."""
    return await _copy_deduplicated(
        conn, TELEMETRY_TABLE, "telemetry_staging", "device_id, time", data, column_types
    )


# --- calculated metrics (issue 17): points COPYed with their readings ---
POINTS_TABLE = "device_data_points"


async def copy_points(conn: asyncpg.Connection, data: bytes, columns: Sequence[str]) -> None:
    """The calculated points of a batch, by binary COPY (the fast path)."""
    await conn.copy_to_table(
        POINTS_TABLE, source=_BytesSource(data), columns=list(columns), format="binary"
    )


async def copy_points_deduplicated(
    conn: asyncpg.Connection, data: bytes, column_types: Sequence[tuple[str, str]]
) -> int:
    """The redelivery path for points, as for readings: points already committed with their
    readings stay as they are (with the formula version that computed them)."""
    return await _copy_deduplicated(
        conn, POINTS_TABLE, "points_staging", "device_id, metric, time", data, column_types
    )


async def _copy_deduplicated(
    conn: asyncpg.Connection,
    table: str,
    staging: str,
    key: str,
    data: bytes,
    column_types: Sequence[tuple[str, str]],
) -> int:
    """COPY ``data`` into a temporary ``staging`` table, then insert what ``table`` does not
    hold yet (ON CONFLICT (``key``) DO NOTHING); the rows inserted. The staging table is
    declared from the encoder's own column list (the ingest role may not read the tables, so
    ``LIKE`` is not an option)."""
    definition = ", ".join(f'"{name}" {pg_type}' for name, pg_type in column_types)
    await conn.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {staging} ({definition}) ON COMMIT DELETE ROWS"
    )
    columns = [name for name, _ in column_types]
    await conn.copy_to_table(staging, source=_BytesSource(data), columns=columns, format="binary")
    names = ", ".join(columns)
    status = await conn.execute(
        f"INSERT INTO {table} ({names}) SELECT {names} FROM {staging} "
        f"ON CONFLICT ({key}) DO NOTHING"
    )
    return int(status.split()[-1])


class _BytesSource:
    """asyncpg's copy source protocol over one prepared buffer: zero-copy slices of it, so
    the driver never holds a second full-size copy."""

    CHUNK = 256 * 1024

    def __init__(self, data: bytes) -> None:
        self._view = memoryview(data)
        self._offset = 0

    def __aiter__(self) -> _BytesSource:
        return self

    async def __anext__(self) -> memoryview:
        if self._offset >= len(self._view):
            raise StopAsyncIteration
        chunk = self._view[self._offset : self._offset + self.CHUNK]
        self._offset += self.CHUNK
        return chunk


_REJECT_COLUMNS = (
    "client_id",
    "serial",
    "topic",
    "received_at",
    "code",
    "reason",
    "raw",
    "raw_truncated",
    "reading_index",
)


async def insert_rejects(conn: asyncpg.Connection, rows: Sequence[RejectRow]) -> None:
    if not rows:
        return
    await conn.copy_records_to_table(
        "ingest_rejects",
        records=[
            (
                r.client_id,
                r.serial,
                r.topic,
                r.received_at,
                r.code,
                r.reason,
                r.raw,
                r.raw_truncated,
                r.reading_index,
            )
            for r in rows
        ],
        columns=_REJECT_COLUMNS,
    )


async def insert_alarms(conn: asyncpg.Connection, rows: Sequence[AlarmRow]) -> None:
    if not rows:
        return
    await conn.executemany(
        "INSERT INTO device_alarms (client_id, device_id, code, severity, message, raised_at,"
        " cleared_at, payload) VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb)"
        # A redelivered alarm is the one already stored.
        " ON CONFLICT (device_id, code, raised_at) DO NOTHING",
        [
            (
                r.client_id,
                r.device_id,
                r.code,
                r.severity,
                r.message,
                r.raised_at,
                r.cleared_at,
                r.payload,
            )
            for r in rows
        ],
    )


# An ack is recorded only for a command of the same device that is not finished; the status
# moves forward only (an earlier stage never overwrites a later one).
_ACK = """
WITH target AS (
    SELECT id, client_id, status FROM control_commands
    WHERE id = $1 AND device_id = $2 AND client_id = $3
      AND status NOT IN ('completed', 'failed', 'expired', 'cancelled')
    FOR UPDATE
), ack AS (
    INSERT INTO command_acknowledgments (client_id, command_id, status, result, device_time)
    -- No RETURNING: the ingest role may insert acks but not read them back.
    SELECT client_id, id, $4, $5::jsonb, $6 FROM target
), moved AS (
    UPDATE control_commands c SET
        status = v.next_status,
        delivered_at = coalesce(c.delivered_at, now()),
        completed_at = CASE WHEN v.next_status IN ('completed', 'failed')
                            THEN now() ELSE c.completed_at END,
        result = coalesce($5::jsonb, c.result),
        updated_at = now()
    FROM target t,
         LATERAL (SELECT CASE $4
             WHEN 'received' THEN 'delivered'
             WHEN 'accepted' THEN 'acknowledged'
             WHEN 'rejected' THEN 'failed'
             ELSE $4 END AS next_status) v
    WHERE c.id = t.id
      AND array_position(ARRAY['pending', 'sent', 'delivered', 'acknowledged', 'completed',
                               'failed'], v.next_status)
        > array_position(ARRAY['pending', 'sent', 'delivered', 'acknowledged', 'completed',
                               'failed'], c.status)
    RETURNING c.id, c.status
), audit AS (
    INSERT INTO command_executions (client_id, command_id, from_status, to_status, actor_kind,
                                    detail)
    SELECT t.client_id, m.id, t.status, m.status, 'device', jsonb_build_object('ack', $4::text)
    FROM moved m JOIN target t ON t.id = m.id
)
SELECT count(*) FROM target
"""


async def apply_ack(conn: asyncpg.Connection, ack: AckRow) -> bool:
    """Record a device's ack; False when the command is unknown, another device's or finished."""
    count = await conn.fetchval(
        _ACK,
        ack.command_id,
        ack.device_id,
        ack.client_id,
        ack.status,
        ack.result,
        ack.device_time,
    )
    return bool(count)


# --- commands (issue 14) ---
async def apply_acks(conn: asyncpg.Connection, acks: Sequence[AckRow]) -> list[AckRow]:
    """Record a batch's acks in arrival order in one round trip (0062, the same rule as
    :func:`apply_ack`); the acks that matched no unfinished command of their device."""
    if not acks:
        return []
    rows = await conn.fetch(
        "SELECT * FROM lifebox_apply_command_acks($1::uuid[], $2::uuid[], $3::uuid[], "
        "$4::text[], $5::jsonb[], $6::timestamptz[]) AS stale",
        [a.command_id for a in acks],
        [a.device_id for a in acks],
        [a.client_id for a in acks],
        [a.status for a in acks],
        [a.result for a in acks],
        [a.device_time for a in acks],
    )
    return [acks[r["stale"] - 1] for r in rows]


# --- end commands ---


# One statement, one round trip, its own implicit transaction: the catalogue upsert, the
# devices' last-seen move (a provisioned device turns active with its first accepted
# reading). The NOTIFY live streams follow is sent by announce_commit, in the batch's
# transaction.
_BATCH_FACTS = """
WITH catalog AS (
    INSERT INTO unknown_field_catalog AS c (client_id, field_name, inferred_type,
        first_seen_at, last_seen_at, seen_count, example_value)
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[],
                         $4::timestamptz[], $5::bigint[], $6::jsonb[])
    ON CONFLICT (client_id, field_name) DO UPDATE SET
        inferred_type = CASE WHEN c.inferred_type = EXCLUDED.inferred_type
                             THEN c.inferred_type ELSE 'mixed' END,
        last_seen_at = greatest(c.last_seen_at, EXCLUDED.last_seen_at),
        seen_count = c.seen_count + EXCLUDED.seen_count
), seen AS (
    UPDATE devices d SET
        last_seen_at = greatest(d.last_seen_at, v.seen),
        status = CASE WHEN d.status = 'provisioned' THEN 'active' ELSE d.status END
    FROM (SELECT id, timestamptz 'epoch' + seen_us * interval '1 microsecond' AS seen
          FROM unnest($7::uuid[], $8::bigint[]) AS u(id, seen_us)) AS v
    WHERE d.id = v.id AND (d.last_seen_at IS NULL OR d.last_seen_at < v.seen
                           OR d.status = 'provisioned')
)
SELECT 1  -- both data-modifying CTEs run, referenced or not
"""


async def record_batch_facts(
    conn: asyncpg.Connection,
    catalog: Sequence[CatalogRow],
    latest_us: dict[uuid.UUID, int],
) -> None:
    """After batches committed: unknown-field catalogue and devices' last seen (Unix µs)."""
    await conn.execute(
        _BATCH_FACTS,
        [r.client_id for r in catalog],
        [r.name for r in catalog],
        [r.json_type for r in catalog],
        [r.seen_at for r in catalog],
        [r.count for r in catalog],
        [r.example for r in catalog],
        list(latest_us),
        list(latest_us.values()),
    )


# The commit announcement (issue 18): one notification per device of the batch, in the
# batch's transaction, so PostgreSQL delivers it at COMMIT (and never for a rolled-back
# batch). Same payload as telemetry_notices.encode_notices, with the transaction's own id.
_ANNOUNCE = """
SELECT x, count(pg_notify($1, json_build_object(
    'device_id', d, 'client_id', c, 'commits', json_build_array(json_build_array(x, lo, hi, n))
)::text))
FROM (SELECT pg_current_xact_id()::text::int8 AS x) AS t,
     unnest($2::uuid[], $3::uuid[], $4::int8[], $5::int8[], $6::int8[]) AS u(d, c, lo, hi, n)
GROUP BY x
"""


async def announce_commit(
    conn: asyncpg.Connection, spans: dict[uuid.UUID, tuple[uuid.UUID, int, int, int]]
) -> int:
    """Inside the batch's transaction, after its COPY: queue the ``lifebox_telemetry``
    notifications of its rows (`spans`: device → (client, min µs, max µs, rows)) and return
    the transaction's id, in one round trip."""
    if not spans:
        return await current_xact_id(conn)
    row = await conn.fetchrow(
        _ANNOUNCE,
        CHANNEL,
        list(spans),
        [s[0] for s in spans.values()],
        [s[1] for s in spans.values()],
        [s[2] for s in spans.values()],
        [s[3] for s in spans.values()],
    )
    assert row is not None
    xid: int = row["x"]
    return xid
