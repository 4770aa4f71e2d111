"""Commands sent to devices, their trail and their delivery jobs: the API's SQL.

Every status change here writes its ``command_executions`` row in the same statement; the
database refuses a change that is not a defined transition or lacks its row (0060). A new
command and its outbox job are inserted together, so a dispatcher can only ever see a
committed command.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

FINAL_STATUSES = ("completed", "failed", "expired", "cancelled")
STATUSES = (
    "pending",
    "sent",
    "delivered",
    "acknowledged",
    "completed",
    "failed",
    "expired",
    "cancelled",
)


@dataclass(frozen=True)
class Command:
    """A command as stored."""

    id: uuid.UUID
    client_id: uuid.UUID
    device_id: uuid.UUID
    template_id: uuid.UUID
    command_type: str
    parameters: dict[str, Any]
    status: str
    issued_by: uuid.UUID | None
    issued_at: datetime
    sent_at: datetime | None
    delivered_at: datetime | None
    completed_at: datetime | None
    expires_at: datetime
    retries: int
    max_retries: int
    result: Any
    error: str | None


@dataclass(frozen=True)
class Execution:
    """One transition of a command."""

    id: uuid.UUID
    client_id: uuid.UUID
    command_id: uuid.UUID
    device_id: uuid.UUID
    from_status: str | None
    to_status: str
    actor_kind: str
    actor_user_id: uuid.UUID | None
    detail: dict[str, Any]
    at: datetime


@dataclass(frozen=True)
class Actor:
    """Who causes a transition: a user, the device, or the platform (``detail`` says what)."""

    kind: str  # 'user' | 'device' | 'system'
    user_id: uuid.UUID | None = None
    detail: dict[str, Any] | None = None


@dataclass(frozen=True)
class NewCommand:
    client_id: uuid.UUID
    device_id: uuid.UUID
    template_id: uuid.UUID
    command_type: str
    parameters: dict[str, Any]
    expires_at: datetime
    max_retries: int
    issued_by: uuid.UUID | None


_COLUMNS = (
    "c.id, c.client_id, c.device_id, c.template_id, c.command_type, c.parameters::text AS "
    "parameters, c.status, c.issued_by, c.issued_at, c.sent_at, c.delivered_at, "
    "c.completed_at, c.expires_at, c.retries, c.max_retries, c.result::text AS result, c.error"
)
_EXECUTION_COLUMNS = (
    "e.id, e.client_id, e.command_id, c.device_id, e.from_status, e.to_status, e.actor_kind, "
    "e.actor_user_id, e.detail::text AS detail, e.at"
)
# Which commands a caller sees: $1 its client (NULL: staff, every tenant), $2 the devices it
# may see (NULL: every device of its scope).
VISIBLE = "($1::uuid IS NULL OR c.client_id = $1) AND ($2::uuid[] IS NULL OR c.device_id = ANY($2))"


def _json(value: str | None) -> Any:
    return None if value is None else json.loads(value)


def command_of(row: asyncpg.Record) -> Command:
    return Command(
        row["id"],
        row["client_id"],
        row["device_id"],
        row["template_id"],
        row["command_type"],
        json.loads(row["parameters"]),
        row["status"],
        row["issued_by"],
        row["issued_at"],
        row["sent_at"],
        row["delivered_at"],
        row["completed_at"],
        row["expires_at"],
        row["retries"],
        row["max_retries"],
        _json(row["result"]),
        row["error"],
    )


def execution_of(row: asyncpg.Record) -> Execution:
    return Execution(
        row["id"],
        row["client_id"],
        row["command_id"],
        row["device_id"],
        row["from_status"],
        row["to_status"],
        row["actor_kind"],
        row["actor_user_id"],
        json.loads(row["detail"]),
        row["at"],
    )


# The command, its birth in the trail and its delivery job: one statement, one round trip.
# ``target`` finds the client's device (with its and its client's status, so a refusal can
# say why) and takes the device's send lock before anything is inserted: the job's ``seq``
# is drawn after the lock, and the lock is held until COMMIT, so a device's jobs commit in
# the order of their ``seq`` (the order the dispatcher publishes them). Nothing is inserted
# unless the device may receive commands and its client is active.
_INSERT = f"""
WITH target AS MATERIALIZED (
    SELECT d.status AS device_status, k.status AS client_status,
           pg_advisory_xact_lock(hashtextextended('lifebox.command.' || d.id::text, 0))::text
               AS locked
    FROM devices d JOIN clients k ON k.id = d.client_id
    WHERE d.id = $2 AND d.client_id = $1
), c AS (
    INSERT INTO control_commands (client_id, device_id, template_id, command_type, parameters,
                                  issued_by, expires_at, max_retries)
    SELECT $1, $2, $3, $4, $5::jsonb, $6, $7, $8 FROM target
    WHERE target.device_status = ANY($11::text[]) AND target.client_status = 'active'
    RETURNING *
), trail AS (
    INSERT INTO command_executions (client_id, command_id, from_status, to_status, actor_kind,
                                    actor_user_id, detail)
    SELECT client_id, id, NULL, 'pending', $9, $6, $10::jsonb FROM c
), job AS (
    INSERT INTO command_outbox (command_id, client_id, device_id)
    SELECT id, client_id, device_id FROM c
)
SELECT t.device_status, t.client_status, {_COLUMNS}
FROM target t LEFT JOIN c ON true
"""


@dataclass(frozen=True)
class Refused:
    """Why :func:`insert_command` stored nothing: the device is not the client's (both None),
    or its or its client's status."""

    device_status: str | None
    client_status: str | None


async def insert_command(
    conn: asyncpg.Connection, new: NewCommand, actor: Actor, deliverable: Sequence[str]
) -> Command | Refused:
    """Store a pending command with its trail row and its outbox job, if the device is the
    client's, in one of the ``deliverable`` statuses, and its client active."""
    row = await conn.fetchrow(
        _INSERT,
        new.client_id,
        new.device_id,
        new.template_id,
        new.command_type,
        json.dumps(new.parameters),
        new.issued_by,
        new.expires_at,
        new.max_retries,
        actor.kind,
        json.dumps(actor.detail or {}),
        list(deliverable),
    )
    if row is None:
        return Refused(None, None)
    if row["id"] is None:
        return Refused(row["device_status"], row["client_status"])
    return command_of(row)


async def lock_idempotency_key(
    conn: asyncpg.Connection, client_id: uuid.UUID, requester: str, key: str
) -> uuid.UUID | None:
    """Serialise uses of one key and return the command it named within the last 24 h."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1::text || ':' || $2 || ':' || $3, 0))",
        str(client_id),
        requester,
        key,
    )
    found: uuid.UUID | None = await conn.fetchval(
        "SELECT command_id FROM command_idempotency_keys WHERE client_id = $1 AND requester = $2 "
        "AND key = $3 AND created_at > now() - interval '24 hours'",
        client_id,
        requester,
        key,
    )
    return found


async def remember_idempotency_key(
    conn: asyncpg.Connection,
    client_id: uuid.UUID,
    requester: str,
    key: str,
    command_id: uuid.UUID,
) -> None:
    """Name ``command_id`` for the key (taking over a use older than 24 h)."""
    await conn.execute(
        "INSERT INTO command_idempotency_keys (client_id, requester, key, command_id) "
        "VALUES ($1, $2, $3, $4) ON CONFLICT (client_id, requester, key) DO UPDATE "
        "SET command_id = EXCLUDED.command_id, created_at = now()",
        client_id,
        requester,
        key,
        command_id,
    )


async def get_command(
    conn: asyncpg.Connection,
    command_id: uuid.UUID,
    client_id: uuid.UUID | None,
    device_ids: Sequence[uuid.UUID] | None,
    *,
    lock: bool = False,
) -> Command | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM control_commands c WHERE c.id = $3 AND {VISIBLE}"
        + (" FOR UPDATE" if lock else ""),
        client_id,
        None if device_ids is None else list(device_ids),
        command_id,
    )
    return command_of(row) if row else None


async def get_commands(
    conn: asyncpg.Connection, command_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, Command]:
    """Commands by id, under the transaction's scope only (for fan-out)."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM control_commands c WHERE c.id = ANY($1::uuid[])",
        list(command_ids),
    )
    return {r["id"]: command_of(r) for r in rows}


@dataclass(frozen=True)
class CommandQuery:
    device_id: uuid.UUID | None = None
    statuses: tuple[str, ...] = ()
    template_id: uuid.UUID | None = None
    start: datetime | None = None
    end: datetime | None = None


async def list_commands(
    conn: asyncpg.Connection,
    client_id: uuid.UUID | None,
    device_ids: Sequence[uuid.UUID] | None,
    query: CommandQuery,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[Command]:
    """Newest first, keyset on (issued_at, id)."""
    rows = await conn.fetch(
        f"""
        SELECT {_COLUMNS} FROM control_commands c
        WHERE {VISIBLE}
          AND ($3::uuid IS NULL OR c.device_id = $3)
          AND (cardinality($4::text[]) = 0 OR c.status = ANY($4))
          AND ($5::uuid IS NULL OR c.template_id = $5)
          AND ($6::timestamptz IS NULL OR c.issued_at >= $6)
          AND ($7::timestamptz IS NULL OR c.issued_at < $7)
          AND ($8::timestamptz IS NULL OR (c.issued_at, c.id) < ($8, $9))
        ORDER BY c.issued_at DESC, c.id DESC
        LIMIT $10
        """,
        client_id,
        None if device_ids is None else list(device_ids),
        query.device_id,
        list(query.statuses),
        query.template_id,
        query.start,
        query.end,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    return [command_of(r) for r in rows]


# One transition with its trail row; nothing moves unless the command is in `from_statuses`.
_MOVE = f"""
WITH target AS (
    SELECT id, client_id, status FROM control_commands
    WHERE id = $1 AND status = ANY($2::text[])
    FOR UPDATE
), moved AS (
    UPDATE control_commands c SET status = $3, error = coalesce($7, c.error), updated_at = now()
    FROM target t WHERE c.id = t.id
    RETURNING c.*
), trail AS (
    INSERT INTO command_executions (client_id, command_id, from_status, to_status, actor_kind,
                                    actor_user_id, detail)
    SELECT t.client_id, t.id, t.status, $3, $4, $5, $6::jsonb FROM target t JOIN moved m USING (id)
)
SELECT {_COLUMNS} FROM moved c
"""


async def move_command(
    conn: asyncpg.Connection,
    command_id: uuid.UUID,
    from_statuses: Sequence[str],
    to_status: str,
    actor: Actor,
    error: str | None = None,
) -> Command | None:
    """Move the command to ``to_status`` if it is in one of ``from_statuses`` (else None)."""
    row = await conn.fetchrow(
        _MOVE,
        command_id,
        list(from_statuses),
        to_status,
        actor.kind,
        actor.user_id,
        json.dumps(actor.detail or {}),
        error,
    )
    return command_of(row) if row else None


async def list_executions(
    conn: asyncpg.Connection,
    command_id: uuid.UUID,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[Execution]:
    """A command's trail, oldest first (keyset on at, id)."""
    rows = await conn.fetch(
        f"""
        SELECT {_EXECUTION_COLUMNS} FROM command_executions e
        JOIN control_commands c ON c.id = e.command_id
        WHERE e.command_id = $1
          AND ($2::timestamptz IS NULL OR (e.at, e.id) > ($2, $3))
        ORDER BY e.at, e.id
        LIMIT $4
        """,
        command_id,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    return [execution_of(r) for r in rows]


async def executions_by_id(
    conn: asyncpg.Connection, execution_ids: Sequence[uuid.UUID]
) -> list[Execution]:
    """Trail rows by id, oldest first (what a NOTIFY named)."""
    rows = await conn.fetch(
        f"""
        SELECT {_EXECUTION_COLUMNS} FROM command_executions e
        JOIN control_commands c ON c.id = e.command_id
        WHERE e.id = ANY($1::uuid[])
        ORDER BY e.at, e.id
        """,
        list(execution_ids),
    )
    return [execution_of(r) for r in rows]


async def executions_since(
    conn: asyncpg.Connection,
    client_id: uuid.UUID | None,
    device_ids: Sequence[uuid.UUID] | None,
    since: datetime,
    limit: int,
) -> list[Execution]:
    """The trail rows of visible commands since ``since``, oldest first (a stream's catch-up)."""
    rows = await conn.fetch(
        f"""
        SELECT {_EXECUTION_COLUMNS} FROM command_executions e
        JOIN control_commands c ON c.id = e.command_id
        WHERE {VISIBLE} AND e.at >= $3
        ORDER BY e.at, e.id
        LIMIT $4
        """,
        client_id,
        None if device_ids is None else list(device_ids),
        since,
        limit,
    )
    return [execution_of(r) for r in rows]
