"""Telemetry reads: raw pages, time buckets, latest per device, rows after a time (with
the snapshot the read saw) and the rows of given commits.

Field names come from :data:`FIELD_KINDS`, derived from the one column definition
(:data:`lifebox_grpc.native.COLUMN_TYPES`); a name that is not a key there never reaches
SQL (:func:`field_sql` refuses it), and every name is quoted besides.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from lifebox_grpc.native import COLUMN_TYPES
from lifebox_grpc.store.devices import VISIBLE, DeviceFilter
from lifebox_grpc.store.partitions import TIMESCALEDB
from lifebox_grpc.store.xact_snapshots import XactSnapshot

# Value kinds as the API reports them.
DOUBLE, INT64, BOOL, STRING = "double", "int64", "bool", "string"
_KIND_OF_TYPE = {
    "double precision": DOUBLE,
    "bigint": INT64,
    "boolean": BOOL,
    "text": STRING,
    "jsonb": STRING,  # "extra", as JSON text
}
_KEY_COLUMNS = frozenset({"time", "device_id", "client_id"})
FIELD_KINDS: dict[str, str] = {
    name: _KIND_OF_TYPE[pg_type] for name, pg_type in COLUMN_TYPES if name not in _KEY_COLUMNS
}
"""Every readable field and its kind, in column order."""
KNOWN_FIELDS: tuple[str, ...] = tuple(name for name in FIELD_KINDS if name != "extra")
NUMERIC_KINDS = frozenset({DOUBLE, INT64})

AVG, MIN, MAX, SUM, COUNT, FIRST, LAST = "avg", "min", "max", "sum", "count", "first", "last"
NUMERIC_ONLY = frozenset({AVG, MIN, MAX, SUM})
# Microseconds since the Unix epoch, computed by PostgreSQL (cheaper than per-row Python).
_MICROS = "(extract(epoch FROM {0}) * 1000000)::int8"
_EPOCH = "'1970-01-01 00:00:00+00'::timestamptz"


def field_sql(name: str) -> str:
    """The select expression of a known field; KeyError for anything else."""
    kind = FIELD_KINDS[name]
    if name == "extra":
        return 'e."extra"::text AS "extra"'
    assert kind
    return f'e."{name}"'


def _fields_sql(fields: Sequence[str]) -> str:
    return "".join(", " + field_sql(f) for f in fields)


@dataclass(frozen=True)
class Aggregate:
    """One aggregate column: a known field and a function (validated by the caller)."""

    field: str
    function: str

    @property
    def kind(self) -> str:
        """The kind of the result values."""
        if self.function == COUNT:
            return INT64
        if self.function in NUMERIC_ONLY:
            return DOUBLE
        return FIELD_KINDS[self.field]

    def sql(self) -> str:
        """The aggregate over one bucket's rows ``e``.

        FIRST (LAST) is the value of the oldest (newest) row where the field is set: the
        least (greatest) pair ``[time, value]``, compared by time first (times of one device
        are unique, so the value never decides), then element 2 of it. Built-in
        ``min``/``max`` over arrays keep one pair per bucket, where an ``array_agg`` ordered
        by time would hold (and sort) every value of the bucket. The time goes in the
        value's array type: µs as float8 are exact (below 2^53), as text zero-padded and
        compared bytewise (COLLATE "C"; reading times are after 1970, so never negative).
        """
        field_kind = FIELD_KINDS[self.field]  # KeyError for unknown names
        column = 'e."extra"::text' if self.field == "extra" else f'e."{self.field}"'
        if self.function in NUMERIC_ONLY:
            assert field_kind in NUMERIC_KINDS
            return f"{self.function}({column})::float8"
        if self.function == COUNT:
            return f"count({column})"
        assert self.function in (FIRST, LAST)
        edge = "min" if self.function == FIRST else "max"
        when = _MICROS.format("e.time")
        pair, value = {
            DOUBLE: (f"ARRAY[{when}::float8, {column}]", "{}"),
            INT64: (f"ARRAY[{when}, {column}]", "{}"),
            BOOL: (f"ARRAY[{when}, {column}::int4::int8]", "({} <> 0)"),
            STRING: (f"ARRAY[lpad({when}::text, 20, '0'), {column}] COLLATE \"C\"", "{}"),
        }[field_kind]
        return value.format(f"({edge}({pair}) FILTER (WHERE {column} IS NOT NULL))[2]")


def query_sql(fields: Sequence[str], *, descending: bool, after: bool) -> str:
    """Raw readings of the devices of $3 that the filter ($1, $2: :data:`devices.VISIBLE`)
    lets the caller see, in [$4, $5), device by device, $6 rows at most; with ``after``, only
    those past the cursor ($7 device, $8 time). The cursor is an index condition on
    (device_id, time), so every page costs the same. The first column lists the visible
    devices (one statement checks and reads); then one row per device, each column an array
    (asyncpg decodes arrays in C, far cheaper than per-row records), or one row of NULLs when
    no reading matched."""
    op, order = ("<", " DESC") if descending else (">", "")
    cursor = f" AND (e.device_id, e.time) {op} ($7::uuid, $8::timestamptz)" if after else ""
    page = (
        f"SELECT e.device_id, e.time{_fields_sql(fields)} FROM telemetry_events e "
        f"WHERE e.device_id = ANY(v.ids) AND e.time >= $4 AND e.time < $5{cursor} "
        f"ORDER BY e.device_id{order}, e.time{order} LIMIT $6"
    )
    arrays = "".join(f', array_agg(p."{f}" ORDER BY p.time{order})' for f in fields)
    return (
        f"WITH v AS (SELECT coalesce(array_agg(d.id), '{{}}') AS ids FROM devices d "
        f"WHERE d.id = ANY($3::uuid[]) AND {VISIBLE}) "
        f"SELECT v.ids AS visible, g.* FROM v LEFT JOIN LATERAL ("
        f"SELECT p.device_id, array_agg({_MICROS.format('p.time')} ORDER BY p.time{order}) "
        f"AS t{arrays} FROM ({page}) p GROUP BY p.device_id) g ON true "
        f"ORDER BY g.device_id{order}"
    )


@dataclass(frozen=True)
class QueryPage:
    """The devices the caller may see, and their readings: one row per device with data,
    (device_id, [t micros], [field 1 values], ...)."""

    visible: frozenset[uuid.UUID]
    rows: list[tuple[Any, ...]]


async def query(
    conn: asyncpg.Connection,
    scope: DeviceFilter,
    device_ids: Sequence[uuid.UUID],
    start: datetime,
    end: datetime,
    fields: Sequence[str],
    *,
    descending: bool,
    after: tuple[uuid.UUID, datetime] | None,
    limit: int,
) -> QueryPage:
    """``limit`` readings in all, of the visible ones of ``device_ids``."""
    sql = query_sql(fields, descending=descending, after=after is not None)
    args: list[object] = [scope.client_id, scope.device_list, list(device_ids), start, end, limit]
    if after is not None:
        args += [after[0], after[1]]
    records = await conn.fetch(sql, *args)
    return QueryPage(frozenset(records[0][0]), [tuple(r)[1:] for r in records if r[1] is not None])


def bucket_sql(storage: str, *, calendar_month: bool) -> str:
    """The bucket of ``e.time``: $4 is the width (an interval) unless calendar months."""
    if calendar_month:
        return "date_trunc('month', e.time, 'UTC')"
    if storage == TIMESCALEDB:
        return f"time_bucket($4::interval, e.time, {_EPOCH})"
    return f"date_bin($4::interval, e.time, {_EPOCH})"


def aggregate_sql(storage: str, aggregates: Sequence[Aggregate], *, calendar_month: bool) -> str:
    """Per device of $1 and bucket of [$2, $3) with rows: (device_id, t, a0, a1, ...)."""
    columns = "".join(f", {a.sql()} AS a{i}" for i, a in enumerate(aggregates))
    bucket = bucket_sql(storage, calendar_month=calendar_month)
    return (
        f"SELECT e.device_id, {_MICROS.format(bucket)} AS t{columns} "
        f"FROM telemetry_events e "
        f"WHERE e.device_id = ANY($1::uuid[]) AND e.time >= $2 AND e.time < $3 "
        f"GROUP BY e.device_id, {bucket} ORDER BY e.device_id, {bucket}"
    )


async def aggregate(
    conn: asyncpg.Connection,
    storage: str,
    device_ids: Sequence[uuid.UUID],
    start: datetime,
    end: datetime,
    aggregates: Sequence[Aggregate],
    *,
    width: timedelta | None,
) -> list[asyncpg.Record]:
    """Rows of (device_id, t bucket start micros, a0, a1, ...); ``width`` None: months."""
    sql = aggregate_sql(storage, aggregates, calendar_month=width is None)
    args: list[object] = [list(device_ids), start, end]
    if width is not None:
        args.append(width)
    return list(await conn.fetch(sql, *args))


def latest_sql(fields: Sequence[str]) -> str:
    """Each device of $3 that the filter ($1, $2: :data:`devices.VISIBLE`) lets the caller
    see, in request order, with its newest reading (a NULL time when it has none): one LIMIT
    1 probe of the (device_id, time) key per device, an index and not a scan. A device left
    out is one the caller may not see, so no separate visibility check is needed."""
    return (
        f"SELECT d.id AS device_id, l.* FROM unnest($3::uuid[]) WITH ORDINALITY AS r(id, n) "
        f"JOIN devices d ON d.id = r.id "
        f"LEFT JOIN LATERAL (SELECT {_MICROS.format('e.time')} AS t, e.time"
        f"{_fields_sql(fields)} FROM telemetry_events e WHERE e.device_id = d.id "
        f"ORDER BY e.time DESC LIMIT 1) l ON true WHERE {VISIBLE} ORDER BY r.n"
    )


async def latest(
    conn: asyncpg.Connection,
    device_ids: Sequence[uuid.UUID],
    fields: Sequence[str],
    scope: DeviceFilter,
) -> list[asyncpg.Record]:
    """(device_id, t micros or None, time, values...) of each visible device."""
    return list(
        await conn.fetch(latest_sql(fields), scope.client_id, scope.device_list, list(device_ids))
    )


async def latest_times(
    conn: asyncpg.Connection, device_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, datetime | None]:
    rows = await conn.fetch(
        "SELECT d.id, (SELECT max(e.time) FROM telemetry_events e WHERE e.device_id = d.id) "
        "AS latest FROM unnest($1::uuid[]) AS d(id)",
        list(device_ids),
    )
    return {row["id"]: row["latest"] for row in rows}


@dataclass(frozen=True)
class CatchUp:
    """Rows after per-device times, and the snapshot the read saw."""

    rows: list[asyncpg.Record]
    """(device_id, t micros, time, fields..., n), per device oldest first."""
    snapshot: XactSnapshot


async def rows_after(
    conn: asyncpg.Connection,
    cursors: Sequence[tuple[uuid.UUID, datetime]],
    fields: Sequence[str],
    limit: int,
) -> CatchUp:
    """For each (device, time): up to ``limit`` of its rows after that time, oldest first,
    with ``pg_current_snapshot()`` of the same statement (so exactly what the read saw)."""
    rows = await conn.fetch(
        f"SELECT r.*, s.snapshot FROM (SELECT pg_current_snapshot()::text AS snapshot) s "
        f"LEFT JOIN LATERAL (SELECT c.id AS device_id, x.*, c.n "
        f"FROM unnest($1::uuid[], $2::timestamptz[]) WITH ORDINALITY AS c(id, after, n) "
        f"CROSS JOIN LATERAL (SELECT {_MICROS.format('e.time')} AS t, e.time"
        f"{_fields_sql(fields)} FROM telemetry_events e "
        f"WHERE e.device_id = c.id AND e.time > c.after ORDER BY e.time LIMIT $3) x "
        f") r ON true ORDER BY r.n, r.time",
        [c[0] for c in cursors],
        [c[1] for c in cursors],
        limit,
    )
    snapshot = XactSnapshot.parse(rows[0]["snapshot"])
    return CatchUp([r for r in rows if r["device_id"] is not None], snapshot)


@dataclass(frozen=True)
class CommitRange:
    """The rows one transaction (64-bit ``xid``) inserted for a device, within a time range
    (Unix µs, inclusive)."""

    device_id: uuid.UUID
    xid: int
    min_us: int
    max_us: int


ROWS_OF_COMMITS_SQL = (
    "SELECT c.id AS device_id, r.*, c.n "
    "FROM unnest($1::uuid[], $2::int8[], $3::timestamptz[], $4::timestamptz[]) "
    "WITH ORDINALITY AS c(id, xid, lo, hi, n) "
    "CROSS JOIN LATERAL (SELECT {micros} AS t, e.time{fields} FROM telemetry_events e "
    "WHERE e.device_id = c.id AND e.time >= c.lo AND e.time <= c.hi "
    "AND e.xmin = (c.xid % 4294967296)::text::xid ORDER BY e.time) r "
    "ORDER BY c.n, r.time"
)
"""The bounds are timestamptz parameters, not ``epoch + µs * interval`` computed in SQL:
with those expressions the (device_id, time) key was probed by device only, so every call
read all of a device's rows in the partition (cost growing with the table: 6.2 s for 200
commits of 50 rows over 2.5 M rows, 2.7 s of it JIT compiling for the inflated estimate);
as plain column comparisons they are index conditions (28 ms, no JIT)."""

_EPOCH_DT = datetime(1970, 1, 1, tzinfo=UTC)


def _at(us: int) -> datetime:
    return _EPOCH_DT + timedelta(microseconds=us)


async def rows_of_commits(
    conn: asyncpg.Connection, commits: Sequence[CommitRange], fields: Sequence[str]
) -> list[asyncpg.Record]:
    """(device_id, t micros, time, fields..., n): the rows each commit inserted in its range,
    by commit (``n``, its 1-based position in ``commits``), oldest first within one.

    Exact because ingest inserts a batch's rows at top level of its transaction, so their
    ``xmin`` is the low 32 bits of its id (and (device_id, time) is unique).
    """
    sql = ROWS_OF_COMMITS_SQL.format(micros=_MICROS.format("e.time"), fields=_fields_sql(fields))
    return list(
        await conn.fetch(
            sql,
            [c.device_id for c in commits],
            [c.xid for c in commits],
            [_at(c.min_us) for c in commits],
            [_at(c.max_us) for c in commits],
        )
    )


@dataclass(frozen=True)
class DataPoint:
    """A processed metric value."""

    metric: str
    time: datetime
    value: float
    unit: str | None
    formula_id: uuid.UUID | None
    formula_version: int | None  # calculated metrics (issue 17)


async def list_data_points(
    conn: asyncpg.Connection,
    device_id: uuid.UUID,
    metric: str | None,
    start: datetime,
    end: datetime,
    *,
    after: tuple[str, datetime] | None,
    limit: int,
) -> list[DataPoint]:
    """Points by (metric, time), the table's key order."""
    rows = await conn.fetch(
        """
        SELECT metric, time, value, unit, formula_id, formula_version FROM device_data_points
        WHERE device_id = $1 AND ($2::text IS NULL OR metric = $2)
          AND time >= $3 AND time < $4
          AND ($5::text IS NULL OR (metric, time) > ($5, $6))
        ORDER BY metric, time
        LIMIT $7
        """,
        device_id,
        metric,
        start,
        end,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    return [DataPoint(*(r[n] for n in DataPoint.__dataclass_fields__)) for r in rows]
