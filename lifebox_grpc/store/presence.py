"""Device presence: applying events through the one ordering rule, sweeping silent devices,
and reading state and history.

Every change goes through ``lifebox_presence_apply()`` (migration 0055), which decides
whether an event is newer than the state: this module never compares sessions itself.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

# NOTIFY channel of every presence change (a history row), sent by the changing transaction.
CHANNEL = "lifebox_presence"
# Online but silent for this many expected intervals: stale.
STALE_INTERVALS = 3


@dataclass(frozen=True)
class PresenceEvent:
    """One thing that may move a device's presence. ``session`` None: the current one."""

    client_id: uuid.UUID
    device_id: uuid.UUID
    state: str  # online | offline | stale
    session: int | None
    cause: str
    at: datetime
    source: str  # status | retained | sweeper | reading | revocation


@dataclass(frozen=True)
class Presence:
    """A device's presence as stored."""

    state: str
    session: int
    cause: str
    last_connect_at: datetime | None
    last_disconnect_at: datetime | None
    updated_at: datetime


@dataclass(frozen=True)
class Connection:
    """One recorded presence change."""

    id: int
    client_id: uuid.UUID
    device_id: uuid.UUID
    time: datetime
    state: str
    session: int
    cause: str
    source: str


_APPLY = """
SELECT count(*) FILTER (WHERE lifebox_presence_apply(c, d, st, se, ca, at, so))
FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::bigint[], $5::text[],
            $6::timestamptz[], $7::text[]) WITH ORDINALITY AS u(c, d, st, se, ca, at, so, n)
"""


async def apply_events(conn: asyncpg.Connection, events: Sequence[PresenceEvent]) -> int:
    """Apply events in one statement (in the caller's transaction); how many changed state.

    Events are applied device by device in a stable order (so workers lock rows in one
    order), each device's in the order given."""
    if not events:
        return 0
    ordered = sorted(enumerate(events), key=lambda pair: (pair[1].device_id.bytes, pair[0]))
    rows = [e for _, e in ordered]
    changed: int = await conn.fetchval(
        _APPLY,
        [e.client_id for e in rows],
        [e.device_id for e in rows],
        [e.state for e in rows],
        [e.session for e in rows],
        [e.cause for e in rows],
        [e.at for e in rows],
        [e.source for e in rows],
    )
    return changed


_SWEEP = f"""
SELECT count(*) FILTER (WHERE lifebox_presence_apply(s.client_id, s.device_id, 'stale',
                                                     s.session, 'silent', now(), 'sweeper'))
FROM (
    SELECT p.client_id, p.device_id, p.session
    FROM device_presence p JOIN devices d ON d.id = p.device_id
    WHERE p.state = 'online'
      AND p.last_heard_at
          < now() - make_interval(secs => d.expected_interval_s * {STALE_INTERVALS})
    ORDER BY p.device_id
    LIMIT $1
) s
"""


async def sweep_stale(conn: asyncpg.Connection, limit: int = 1000) -> int:
    """Mark online devices that LifeBox heard nothing from (status or reading, by its own
    clock) for three expected intervals stale (at most ``limit`` per call, in its own
    transaction); how many were marked. Readings update ``last_heard_at`` at most every half
    interval, so a device goes stale between three and three and a half intervals."""
    async with conn.transaction():
        marked: int = await conn.fetchval(_SWEEP, limit)
    return marked


_PRESENCE = """
SELECT device_id, state, session, cause, last_connect_at, last_disconnect_at, updated_at
FROM device_presence WHERE device_id = ANY($1::uuid[])
"""


async def presence_of(
    conn: asyncpg.Connection, device_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, Presence]:
    """The stored presence of those of ``device_ids`` that have one (row-level security
    scopes it to the caller's tenant)."""
    rows = await conn.fetch(_PRESENCE, list(device_ids))
    return {r["device_id"]: _presence(r) for r in rows}


def _presence(row: asyncpg.Record) -> Presence:
    return Presence(
        row["state"],
        row["session"],
        row["cause"],
        row["last_connect_at"],
        row["last_disconnect_at"],
        row["updated_at"],
    )


_COLUMNS = "id, client_id, device_id, time, state, session, cause, source"


def _connection(row: asyncpg.Record) -> Connection:
    return Connection(
        row["id"],
        row["client_id"],
        row["device_id"],
        row["time"],
        row["state"],
        row["session"],
        row["cause"],
        row["source"],
    )


async def list_connections(
    conn: asyncpg.Connection, device_id: uuid.UUID, *, before_id: int | None, limit: int
) -> list[Connection]:
    """A device's presence changes, newest first (keyset on the id: commit order aside, a
    later change of one device always has a higher id, its row being locked meanwhile)."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM device_connections WHERE device_id = $1"
        " AND ($2::bigint IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
        device_id,
        before_id,
        limit,
    )
    return [_connection(r) for r in rows]


async def connections_by_id(conn: asyncpg.Connection, ids: Sequence[int]) -> list[Connection]:
    """The changes with these ids that the caller's tenant may see, in id order."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM device_connections WHERE id = ANY($1::bigint[]) ORDER BY id",
        list(ids),
    )
    return [_connection(r) for r in rows]


async def connections_since(
    conn: asyncpg.Connection, since: datetime, limit: int
) -> list[Connection]:
    """Changes recorded at or after ``since`` (a stream's resynchronisation), in id order."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM device_connections WHERE time >= $1 ORDER BY id LIMIT $2",
        since,
        limit,
    )
    return [_connection(r) for r in rows]


def decode_notice(payload: str) -> tuple[int, uuid.UUID, uuid.UUID]:
    """(history id, device, client) of a ``lifebox_presence`` notification."""
    body = json.loads(payload)
    return int(body["id"]), uuid.UUID(body["device_id"]), uuid.UUID(body["client_id"])
