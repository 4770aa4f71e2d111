"""The dispatcher's SQL: claim due delivery jobs, record publishes, expire commands.

Runs on the staff path (every tenant) as the dispatcher's own role. A claim holds its jobs and
their commands FOR UPDATE (SKIP LOCKED: other dispatchers take other jobs) until the publishes
are acknowledged by the broker and recorded, so no two dispatchers publish one job at once,
and a dispatcher that dies mid-way leaves the job due again (it is republished, same id).
Only a device's oldest job is ever claimed: one command in flight per device.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg


@dataclass(frozen=True)
class Job:
    """A claimed delivery job and what its message needs."""

    command_id: uuid.UUID
    client_id: uuid.UUID
    device_id: uuid.UUID
    serial: str
    command_type: str
    parameters: dict[str, Any]
    status: str
    issued_at: datetime
    expires_at: datetime
    attempts: int
    max_retries: int
    device_status: str
    client_status: str


_CLAIM = """
SELECT o.command_id, c.client_id, c.device_id, d.serial, c.command_type,
       c.parameters::text AS parameters, c.status, c.issued_at, c.expires_at, o.attempts,
       c.max_retries, d.status AS device_status, k.status AS client_status
FROM command_outbox o
JOIN control_commands c ON c.id = o.command_id
JOIN devices d ON d.id = c.device_id
JOIN clients k ON k.id = c.client_id
WHERE o.next_attempt_at <= now()
  AND NOT EXISTS (SELECT 1 FROM command_outbox e WHERE e.device_id = o.device_id AND e.seq < o.seq)
ORDER BY o.next_attempt_at, o.seq
LIMIT $1
FOR UPDATE OF o, c SKIP LOCKED
"""


async def claim_jobs(conn: asyncpg.Connection, limit: int) -> list[Job]:
    """Due head-of-device jobs, locked until the transaction ends."""
    rows = await conn.fetch(_CLAIM, limit)
    return [
        Job(
            r["command_id"],
            r["client_id"],
            r["device_id"],
            r["serial"],
            r["command_type"],
            json.loads(r["parameters"]),
            r["status"],
            r["issued_at"],
            r["expires_at"],
            r["attempts"],
            r["max_retries"],
            r["device_status"],
            r["client_status"],
        )
        for r in rows
    ]


# Publishes acknowledged by the broker: pending -> sent (or a republish, sent -> sent), the
# job rescheduled (a retry, or after the last one its expiry), one trail row each.
_SENT = """
WITH v AS (
    SELECT * FROM unnest($1::uuid[], $2::timestamptz[]) AS v(id, next_at)
), prev AS (
    SELECT c.id, c.client_id, c.status FROM control_commands c JOIN v ON v.id = c.id
    WHERE c.status IN ('pending', 'sent')
), job AS (
    UPDATE command_outbox o SET attempts = o.attempts + 1, next_attempt_at = v.next_at
    FROM v WHERE o.command_id = v.id
    RETURNING o.command_id, o.attempts
), moved AS (
    UPDATE control_commands c SET
        status = 'sent',
        sent_at = coalesce(c.sent_at, now()),
        retries = CASE WHEN p.status = 'sent' THEN c.retries + 1 ELSE c.retries END,
        updated_at = now()
    FROM prev p WHERE c.id = p.id
    RETURNING c.id
)
INSERT INTO command_executions (client_id, command_id, from_status, to_status, actor_kind,
                                detail)
SELECT p.client_id, p.id, p.status, 'sent', 'system',
       jsonb_build_object('attempt', j.attempts, 'dispatcher', $3::text,
                          'republish', p.status = 'sent')
FROM prev p JOIN job j ON j.command_id = p.id JOIN moved m ON m.id = p.id
"""


async def record_sent(
    conn: asyncpg.Connection,
    sent: Sequence[tuple[uuid.UUID, datetime]],
    dispatcher: str,
) -> None:
    """Record the broker's PUBACK of each (command, when to look at it next)."""
    if not sent:
        return
    await conn.execute(_SENT, [s[0] for s in sent], [s[1] for s in sent], dispatcher)


async def hold_until(conn: asyncpg.Connection, command_id: uuid.UUID, when: datetime) -> None:
    """No more publishes of this job: it waits for its ack or its expiry."""
    await conn.execute(
        "UPDATE command_outbox SET next_attempt_at = $2 WHERE command_id = $1", command_id, when
    )


# Commands that may no longer be delivered or finished: expired, with the reason.
_EXPIRE = """
WITH target AS (
    SELECT c.id, c.client_id, c.status FROM control_commands c
    WHERE c.id = ANY($1::uuid[]) AND c.status IN ('pending', 'sent', 'delivered', 'acknowledged')
    FOR UPDATE
), moved AS (
    UPDATE control_commands c SET status = 'expired', error = $2, updated_at = now()
    FROM target t WHERE c.id = t.id
    RETURNING c.id
)
INSERT INTO command_executions (client_id, command_id, from_status, to_status, actor_kind,
                                detail)
SELECT t.client_id, t.id, t.status, 'expired', 'system', jsonb_build_object('reason', $2::text)
FROM target t JOIN moved m ON m.id = t.id
"""


async def expire(conn: asyncpg.Connection, command_ids: Sequence[uuid.UUID], reason: str) -> int:
    if not command_ids:
        return 0
    status = await conn.execute(_EXPIRE, list(command_ids), reason)
    return int(status.split()[-1])


_DUE_EXPIRIES = """
SELECT c.id FROM control_commands c
WHERE c.status IN ('pending', 'sent', 'delivered', 'acknowledged') AND c.expires_at <= now()
ORDER BY c.expires_at
LIMIT $1
FOR UPDATE SKIP LOCKED
"""

LIFETIME_ENDED = "its lifetime ended before the device's final word"


async def expire_due(conn: asyncpg.Connection, limit: int) -> int:
    """Expire unfinished commands past their expiry (those no other dispatcher holds)."""
    ids = [r["id"] for r in await conn.fetch(_DUE_EXPIRIES, limit)]
    return await expire(conn, ids, LIFETIME_ENDED)


async def status_counts(conn: asyncpg.Connection) -> dict[str, int]:
    """Unfinished commands by status (the metrics gauge)."""
    rows = await conn.fetch(
        "SELECT status, count(*) AS n FROM control_commands "
        "WHERE status IN ('pending', 'sent', 'delivered', 'acknowledged') GROUP BY status"
    )
    return {r["status"]: r["n"] for r in rows}
