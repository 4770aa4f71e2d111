"""Alarm evaluation's SQL (ingest): device watermarks, rule states, readings, events.

One evaluation of a set of devices is one transaction: lock their watermarks
(``alarm_device_cursors``, in id order so concurrent evaluators never deadlock), read their
readings after the watermark, then write the events, their changes, the rule states and
the new watermarks. Ingest's role bypasses row-level security: every statement names its
client explicitly.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from lifebox_grpc.alarms.conditions import RULE_FIELDS


@dataclass(frozen=True)
class Cursor:
    device_id: uuid.UUID
    evaluated_through: datetime
    device_type: str


async def lock_cursors(
    conn: asyncpg.Connection,
    client_id: uuid.UUID,
    starts: dict[uuid.UUID, datetime],
) -> list[Cursor]:
    """Lock the watermarks of these devices of the client, creating missing ones at
    ``starts[device]`` (just before the first reading to evaluate); devices deleted
    meanwhile are left out."""
    ids = sorted(starts)
    await conn.execute(
        """
        INSERT INTO alarm_device_cursors (device_id, client_id, evaluated_through)
        SELECT d.id, d.client_id, s.t
        FROM unnest($2::uuid[], $3::timestamptz[]) s(id, t)
        JOIN devices d ON d.id = s.id AND d.client_id = $1
        ORDER BY d.id
        ON CONFLICT (device_id) DO NOTHING
        """,
        client_id,
        ids,
        [starts[i] for i in ids],
    )
    rows = await conn.fetch(
        """
        SELECT c.device_id, c.evaluated_through, d.device_type
        FROM alarm_device_cursors c JOIN devices d ON d.id = c.device_id
        WHERE c.device_id = ANY($2::uuid[]) AND c.client_id = $1
        ORDER BY c.device_id
        FOR UPDATE OF c
        """,
        client_id,
        ids,
    )
    return [Cursor(r["device_id"], r["evaluated_through"], r["device_type"]) for r in rows]


async def metadata_matches(
    conn: asyncpg.Connection, device_ids: Sequence[uuid.UUID], filters: Sequence[str]
) -> set[tuple[uuid.UUID, str]]:
    """The (device, filter JSON) pairs whose device's metadata contains the filter; asked of
    lifebox_device_metadata_contains() (0071): ingest never reads the metadata itself."""
    if not device_ids or not filters:
        return set()
    rows = await conn.fetch(
        """
        SELECT d, f FROM unnest($1::uuid[]) d, unnest($2::text[]) f
        WHERE lifebox_device_metadata_contains(d, f::jsonb)
        """,
        list(device_ids),
        list(filters),
    )
    return {(r["d"], r["f"]) for r in rows}


async def skip_to_latest(
    conn: asyncpg.Connection, client_id: uuid.UUID, device_ids: Sequence[uuid.UUID]
) -> None:
    """Move the watermarks of devices no rule scopes to their latest reading: there is
    nothing to evaluate (a rule applies from when it exists), and the sweeper must not see
    them behind."""
    if not device_ids:
        return
    await conn.execute(
        """
        UPDATE alarm_device_cursors c
        SET evaluated_through = latest.t, updated_at = now()
        FROM (
            SELECT d, (SELECT max(time) FROM telemetry_events WHERE device_id = d) AS t
            FROM unnest($2::uuid[]) d
        ) latest
        WHERE c.device_id = latest.d AND c.client_id = $1 AND latest.t > c.evaluated_through
        """,
        client_id,
        sorted(device_ids),
    )


async def readings_after(
    conn: asyncpg.Connection,
    cursors: Sequence[Cursor],
    fields: Sequence[str],
    limit: int,
) -> list[asyncpg.Record]:
    """(device_id, time, *fields) of each device's readings after its watermark, in time
    order per device, at most ``limit`` per device."""
    assert all(f in RULE_FIELDS for f in fields), "fields come from the known columns"
    selected = "".join(f", e.{f}" for f in fields)
    return list(
        await conn.fetch(
            f"""
            SELECT c.d AS device_id, e.time{selected}
            FROM unnest($1::uuid[], $2::timestamptz[]) c(d, t)
            CROSS JOIN LATERAL (
                SELECT time{"".join(f", {f}" for f in fields)} FROM telemetry_events
                WHERE device_id = c.d AND time > c.t ORDER BY time LIMIT $3
            ) e
            ORDER BY c.d, e.time
            """,
            [c.device_id for c in cursors],
            [c.evaluated_through for c in cursors],
            limit,
        )
    )


def _as_double(field: str) -> str:
    """A field as a double, NaN where absent (booleans 1 and 0), for an array of columns."""
    from lifebox_grpc.alarms.conditions import BOOLEAN_FIELDS

    value = f"e.{field}::int::float8" if field in BOOLEAN_FIELDS else f"e.{field}::float8"
    return f"array_agg(coalesce({value}, 'NaN'::float8) ORDER BY e.time) AS {field}"


async def reading_columns(
    conn: asyncpg.Connection,
    cursors: Sequence[Cursor],
    fields: Sequence[str],
    limit: int,
) -> list[asyncpg.Record]:
    """One row per device with readings after its watermark (at most ``limit``):
    ``device_id``, ``times_us`` (Unix microseconds, time order) and one float8[] per field
    (NaN where absent), so evaluation takes columns without a Python step per value."""
    assert all(f in RULE_FIELDS for f in fields), "fields come from the known columns"
    return list(
        await conn.fetch(
            f"""
            SELECT c.d AS device_id,
                   array_agg((extract(epoch FROM e.time) * 1000000)::int8 ORDER BY e.time)
                       AS times_us{"".join(", " + _as_double(f) for f in fields)}
            FROM unnest($1::uuid[], $2::timestamptz[]) c(d, t)
            CROSS JOIN LATERAL (
                SELECT time{"".join(f", {f}" for f in fields)} FROM telemetry_events
                WHERE device_id = c.d AND time > c.t ORDER BY time LIMIT $3
            ) e
            GROUP BY c.d
            """,
            [c.device_id for c in cursors],
            [c.evaluated_through for c in cursors],
            limit,
        )
    )


async def readings_within(
    conn: asyncpg.Connection,
    spans: dict[uuid.UUID, tuple[datetime, datetime]],
    fields: Sequence[str],
    limit: int,
) -> list[asyncpg.Record]:
    """(device_id, time, *fields) of each device's readings in its (start, end] span, the
    latest ``limit`` per device, in time order per device (what a rate's window reaches
    back over)."""
    assert all(f in RULE_FIELDS for f in fields), "fields come from the known columns"
    ids = sorted(spans)
    inner = "".join(f", {f}" for f in fields)
    return list(
        await conn.fetch(
            f"""
            SELECT c.d AS device_id, e.time{"".join(f", e.{f}" for f in fields)}
            FROM unnest($1::uuid[], $2::timestamptz[], $3::timestamptz[]) c(d, lo, hi)
            CROSS JOIN LATERAL (
                SELECT time{inner} FROM telemetry_events
                WHERE device_id = c.d AND time > c.lo AND time <= c.hi
                ORDER BY time DESC LIMIT $4
            ) e
            ORDER BY c.d, e.time
            """,
            ids,
            [spans[i][0] for i in ids],
            [spans[i][1] for i in ids],
            limit,
        )
    )


@dataclass(frozen=True)
class StoredState:
    rule_id: uuid.UUID
    device_id: uuid.UUID
    event_id: uuid.UUID | None
    pending_since: datetime | None
    clear_since: datetime | None


async def states(
    conn: asyncpg.Connection, client_id: uuid.UUID, device_ids: Sequence[uuid.UUID]
) -> list[StoredState]:
    rows = await conn.fetch(
        """
        SELECT rule_id, device_id, event_id, pending_since, clear_since
        FROM alarm_rule_states WHERE client_id = $1 AND device_id = ANY($2::uuid[])
        """,
        client_id,
        list(device_ids),
    )
    return [StoredState(*r.values()) for r in rows]


@dataclass
class NewEvent:
    """An event raised by this evaluation; cleared too when ``cleared_at`` is set."""

    id: uuid.UUID
    rule_id: uuid.UUID
    device_id: uuid.UUID
    severity: str
    raised_at: datetime
    trigger_value: float | None
    message: str | None
    details: dict[str, Any]
    cleared_at: datetime | None = None
    clear_value: float | None = None


@dataclass(frozen=True)
class Clearing:
    event_id: uuid.UUID
    cleared_at: datetime
    clear_value: float | None
    # Cleared by a late reading: merged into the event's details as ``cleared_late``.
    late: dict[str, Any] | None = None


async def write_evaluation(
    conn: asyncpg.Connection,
    client_id: uuid.UUID,
    raised: Sequence[NewEvent],
    cleared: Sequence[Clearing],
    changed: Sequence[StoredState],
    watermarks: dict[uuid.UUID, datetime],
    late_counts: dict[uuid.UUID, int] | None = None,
) -> None:
    """Everything one evaluation found, in its transaction: the events it raised (as they
    end: one raised and cleared by the same readings is inserted cleared), the clears of
    events raised before, the changes of both, states and watermarks."""
    # Clears first: an event raised again by these readings is one open event per rule and
    # device only once the one before it is cleared.
    if cleared:
        await conn.execute(
            """
            WITH c AS (
                UPDATE alarm_events e
                SET cleared_at = c.cleared_at, clear_value = c.clear_value,
                    status = CASE e.status WHEN 'active_ack' THEN 'cleared_ack'
                                           ELSE 'cleared_unack' END,
                    details = CASE WHEN c.late IS NULL THEN e.details
                                   ELSE coalesce(e.details, '{}'::jsonb)
                                        || jsonb_build_object('cleared_late', c.late::jsonb)
                              END
                FROM unnest($2::uuid[], $3::timestamptz[], $4::float8[], $5::text[])
                     c(id, cleared_at, clear_value, late)
                WHERE e.id = c.id AND e.client_id = $1
                  AND e.status IN ('active_unack', 'active_ack')
                RETURNING e.id, e.rule_id, e.device_id, e.status, e.cleared_at
            )
            INSERT INTO alarm_event_changes (client_id, event_id, rule_id, device_id, change,
                                             status, changed_at)
            SELECT $1, id, rule_id, device_id, 'cleared', status, cleared_at FROM c
            """,
            client_id,
            [c.event_id for c in cleared],
            [c.cleared_at for c in cleared],
            [c.clear_value for c in cleared],
            [None if c.late is None else json.dumps(c.late) for c in cleared],
        )
    if raised:
        await conn.execute(
            """
            INSERT INTO alarm_events (id, client_id, rule_id, device_id, severity, raised_at,
                                      trigger_value, message, details, status, cleared_at,
                                      clear_value)
            SELECT e.id, $1, e.rule_id, e.device_id, e.severity, e.raised_at, e.trigger_value,
                   e.message, e.details::jsonb,
                   CASE WHEN e.cleared_at IS NULL THEN 'active_unack' ELSE 'cleared_unack' END,
                   e.cleared_at, e.clear_value
            FROM unnest($2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::timestamptz[],
                        $7::float8[], $8::text[], $9::text[], $10::timestamptz[], $11::float8[])
                 e(id, rule_id, device_id, severity, raised_at, trigger_value, message, details,
                   cleared_at, clear_value)
            """,
            client_id,
            [e.id for e in raised],
            [e.rule_id for e in raised],
            [e.device_id for e in raised],
            [e.severity for e in raised],
            [e.raised_at for e in raised],
            [e.trigger_value for e in raised],
            [e.message for e in raised],
            [json.dumps(e.details) for e in raised],
            [e.cleared_at for e in raised],
            [e.clear_value for e in raised],
        )
        await conn.execute(
            """
            INSERT INTO alarm_event_changes (client_id, event_id, rule_id, device_id, change,
                                             status, changed_at)
            SELECT $1::uuid, e.id, e.rule_id, e.device_id, 'raised', 'active_unack', e.raised_at
            FROM unnest($2::uuid[], $3::uuid[], $4::uuid[], $5::timestamptz[])
                 e(id, rule_id, device_id, raised_at)
            UNION ALL
            SELECT $1::uuid, e.id, e.rule_id, e.device_id, 'cleared', 'cleared_unack', e.cleared_at
            FROM unnest($2::uuid[], $3::uuid[], $4::uuid[], $6::timestamptz[])
                 e(id, rule_id, device_id, cleared_at)
            WHERE e.cleared_at IS NOT NULL
            """,
            client_id,
            [e.id for e in raised],
            [e.rule_id for e in raised],
            [e.device_id for e in raised],
            [e.raised_at for e in raised],
            [e.cleared_at for e in raised],
        )
    if changed:
        await conn.execute(
            """
            INSERT INTO alarm_rule_states AS s (client_id, rule_id, device_id, event_id,
                                                pending_since, clear_since)
            SELECT $1, x.rule_id, x.device_id, x.event_id, x.pending_since, x.clear_since
            FROM unnest($2::uuid[], $3::uuid[], $4::uuid[], $5::timestamptz[],
                        $6::timestamptz[]) x(rule_id, device_id, event_id, pending_since,
                                             clear_since)
            JOIN alarm_rules r ON r.id = x.rule_id AND r.client_id = $1
            ON CONFLICT (rule_id, device_id) DO UPDATE
            SET event_id = excluded.event_id, pending_since = excluded.pending_since,
                clear_since = excluded.clear_since, updated_at = now()
            """,
            client_id,
            [s.rule_id for s in changed],
            [s.device_id for s in changed],
            [s.event_id for s in changed],
            [s.pending_since for s in changed],
            [s.clear_since for s in changed],
        )
    if watermarks:
        ids = sorted(watermarks)
        await conn.execute(
            """
            UPDATE alarm_device_cursors c SET evaluated_through = w.t, updated_at = now()
            FROM unnest($2::uuid[], $3::timestamptz[]) w(id, t)
            WHERE c.device_id = w.id AND c.client_id = $1 AND w.t > c.evaluated_through
            """,
            client_id,
            ids,
            [watermarks[i] for i in ids],
        )
    if late_counts:
        ids = sorted(late_counts)
        await conn.execute(
            """
            UPDATE alarm_device_cursors c SET late_readings = c.late_readings + l.n
            FROM unnest($2::uuid[], $3::bigint[]) l(id, n)
            WHERE c.device_id = l.id AND c.client_id = $1
            """,
            client_id,
            ids,
            [late_counts[i] for i in ids],
        )


async def devices_behind(conn: asyncpg.Connection) -> list[tuple[uuid.UUID, uuid.UUID, datetime]]:
    """(device, client, its first reading past the watermark) of every device with
    committed readings its evaluation has not reached."""
    rows = await conn.fetch(
        """
        SELECT c.device_id, c.client_id, f.time
        FROM alarm_device_cursors c
        CROSS JOIN LATERAL (
            SELECT time FROM telemetry_events e
            WHERE e.device_id = c.device_id AND e.time > c.evaluated_through
            ORDER BY time LIMIT 1
        ) f
        """
    )
    return [(r["device_id"], r["client_id"], r["time"]) for r in rows]


async def readings_between(
    conn: asyncpg.Connection,
    device_id: uuid.UUID,
    fields: Sequence[str],
    start: datetime,
    end: datetime,
    limit: int,
) -> list[asyncpg.Record]:
    """(time, *fields) of one device's readings in [start, end), in time order (a dry run)."""
    assert all(f in RULE_FIELDS for f in fields), "fields come from the known columns"
    return list(
        await conn.fetch(
            f"""
            SELECT time{"".join(f", {f}" for f in fields)} FROM telemetry_events
            WHERE device_id = $1 AND time >= $2 AND time < $3 ORDER BY time LIMIT $4
            """,
            device_id,
            start,
            end,
            limit,
        )
    )


# -- no-data rules (the sweeper) ----------------------------------------------------------


async def no_data_rules(conn: asyncpg.Connection, kind: str = "no_data") -> list[asyncpg.Record]:
    """Every enabled rule of a sweeper's kind (no_data, device_alarm), with its columns (the
    sweeper maps them to Rule)."""
    from lifebox_grpc.store.alarm_rules import COLUMNS

    return list(
        await conn.fetch(
            f"SELECT {COLUMNS} FROM alarm_rules WHERE enabled AND kind = $1 ORDER BY id", kind
        )
    )


async def scoped_devices(
    conn: asyncpg.Connection,
    client_id: uuid.UUID,
    device_id: uuid.UUID | None,
    device_type: str | None,
    device_filter: dict[str, Any] | None,
) -> list[tuple[uuid.UUID, datetime | None]]:
    """(device, last seen) of the client's devices in a rule's scope that send data."""
    rows = await conn.fetch(
        """
        SELECT id, last_seen_at FROM devices
        WHERE client_id = $1 AND status IN ('provisioned', 'active')
          AND ($2::uuid IS NULL OR id = $2) AND ($3::text IS NULL OR device_type = $3)
          AND ($4::jsonb IS NULL OR lifebox_device_metadata_contains(id, $4::jsonb))
        """,
        client_id,
        device_id,
        device_type,
        None if device_filter is None else json.dumps(device_filter),
    )
    return [(r["id"], r["last_seen_at"]) for r in rows]


async def last_value_time(
    conn: asyncpg.Connection, device_id: uuid.UUID, field: str | None, before: datetime
) -> datetime | None:
    """The device's latest reading (with a value of ``field``, if named) before ``before``."""
    assert field is None or field in RULE_FIELDS
    value: datetime | None = await conn.fetchval(
        f"""
        SELECT time FROM telemetry_events
        WHERE device_id = $1 AND time < $2 {"" if field is None else f"AND {field} IS NOT NULL"}
        ORDER BY time DESC LIMIT 1
        """,
        device_id,
        before,
    )
    return value


async def first_value_after(
    conn: asyncpg.Connection, device_id: uuid.UUID, field: str | None, after: datetime
) -> asyncpg.Record | None:
    """(time, value) of the device's first reading (with ``field``) after ``after``."""
    assert field is None or field in RULE_FIELDS
    selected = "NULL::float8" if field is None else f"{field}::float8"
    return await conn.fetchrow(
        f"""
        SELECT time, {selected} AS value FROM telemetry_events
        WHERE device_id = $1 AND time > $2 {"" if field is None else f"AND {field} IS NOT NULL"}
        ORDER BY time LIMIT 1
        """,
        device_id,
        after,
    )


async def lock_state(
    conn: asyncpg.Connection, client_id: uuid.UUID, rule_id: uuid.UUID, device_id: uuid.UUID
) -> StoredState:
    """The rule's state on the device, created empty if missing, locked."""
    await conn.execute(
        "INSERT INTO alarm_rule_states (client_id, rule_id, device_id) VALUES ($1, $2, $3) "
        "ON CONFLICT (rule_id, device_id) DO NOTHING",
        client_id,
        rule_id,
        device_id,
    )
    row = await conn.fetchrow(
        "SELECT rule_id, device_id, event_id, pending_since, clear_since FROM alarm_rule_states "
        "WHERE rule_id = $1 AND device_id = $2 FOR UPDATE",
        rule_id,
        device_id,
    )
    assert row is not None
    return StoredState(*row.values())
