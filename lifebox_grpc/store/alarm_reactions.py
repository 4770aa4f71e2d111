"""Alarm reactions (alarm_reactions), their outbox (alarm_reaction_jobs), outcomes,
webhook secrets and endpoint health: the SQL of the API and of `lifebox reactions`.

Jobs are enqueued by the trigger of migration 0075 with the raise or clear they react to;
here they are only claimed (a lease: due_at moves past the delivery's time, so a worker
killed mid-delivery leaves the job due again), finished and rescheduled.
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

SECRET_BYTES = 32


@dataclass(frozen=True)
class ReactionFields:
    """A reaction as the API validated it (``id`` set: an existing reaction kept)."""

    kind: str
    timing: str
    command_template_id: uuid.UUID | None = None
    parameters: dict[str, Any] | None = None
    webhook_url: str | None = None
    email_to: tuple[str, ...] = ()
    id: uuid.UUID | None = None


@dataclass(frozen=True)
class Reaction:
    id: uuid.UUID
    rule_id: uuid.UUID
    kind: str
    timing: str
    command_template_id: uuid.UUID | None
    template_code: str | None
    parameters: dict[str, Any]
    webhook_url: str | None
    email_to: tuple[str, ...]
    position: int
    failing: bool


@dataclass(frozen=True)
class Outcome:
    reaction_id: uuid.UUID
    kind: str
    phase: str
    outcome: str
    reason: str
    attempt: int
    command_id: uuid.UUID | None
    recorded_at: datetime
    event_id: uuid.UUID


_REACTION_SQL = """
SELECT r.id, r.rule_id, r.kind, r.timing, r.command_template_id, t.code AS template_code,
       r.parameters::text AS parameters, r.webhook_url, r.email_to, r.position,
       coalesce(h.failing_since IS NOT NULL, false) AS failing
FROM alarm_reactions r
LEFT JOIN command_templates t ON t.id = r.command_template_id
LEFT JOIN alarm_webhook_health h ON h.reaction_id = r.id
WHERE r.rule_id = ANY($1::uuid[])
ORDER BY r.rule_id, r.position, r.id
"""


def _reaction(row: asyncpg.Record) -> Reaction:
    values = dict(row)
    return Reaction(
        **{
            **values,
            "parameters": json.loads(values["parameters"]),
            "email_to": tuple(values["email_to"]),
        }
    )


async def reactions_of(
    conn: asyncpg.Connection, rule_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[Reaction]]:
    """Each rule's reactions in their order (rules without any are absent)."""
    out: dict[uuid.UUID, list[Reaction]] = {}
    for row in await conn.fetch(_REACTION_SQL, list(rule_ids)):
        reaction = _reaction(row)
        out.setdefault(reaction.rule_id, []).append(reaction)
    return out


async def replace_reactions(
    conn: asyncpg.Connection,
    client_id: uuid.UUID,
    rule_id: uuid.UUID,
    reactions: Sequence[ReactionFields],
) -> list[Reaction]:
    """Make ``reactions`` the rule's whole list: those naming an existing id are updated in
    place (their pending jobs and health stay), the others are removed or inserted."""
    keep = [r.id for r in reactions if r.id is not None]
    await conn.execute(
        "DELETE FROM alarm_reactions WHERE rule_id = $1 AND client_id = $2 "
        "AND NOT (id = ANY($3::uuid[]))",
        rule_id,
        client_id,
        keep,
    )
    for position, r in enumerate(reactions):
        values = (
            r.kind,
            r.timing,
            r.command_template_id,
            json.dumps(r.parameters or {}),
            r.webhook_url,
            list(r.email_to),
            position,
        )
        if r.id is not None:
            await conn.execute(
                "UPDATE alarm_reactions SET kind = $3, timing = $4, command_template_id = $5, "
                "parameters = $6::jsonb, webhook_url = $7, email_to = $8, position = $9 "
                "WHERE id = $1 AND rule_id = $2",
                r.id,
                rule_id,
                *values,
            )
        else:
            await conn.execute(
                "INSERT INTO alarm_reactions (client_id, rule_id, kind, timing, "
                "command_template_id, parameters, webhook_url, email_to, position) "
                "VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9)",
                client_id,
                rule_id,
                *values,
            )
    return (await reactions_of(conn, [rule_id])).get(rule_id, [])


async def existing_ids(conn: asyncpg.Connection, rule_id: uuid.UUID) -> set[uuid.UUID]:
    rows = await conn.fetch("SELECT id FROM alarm_reactions WHERE rule_id = $1", rule_id)
    return {r["id"] for r in rows}


async def ensure_webhook_secret(
    conn: asyncpg.Connection, client_id: uuid.UUID, rule_id: uuid.UUID
) -> bytes | None:
    """The rule's new signing secret, or None when it already has one (never read back)."""
    secret = secrets.token_bytes(SECRET_BYTES)
    made = await conn.fetchval(
        "INSERT INTO alarm_rule_webhook_secrets (rule_id, client_id, secret) VALUES ($1, $2, $3) "
        "ON CONFLICT (rule_id) DO NOTHING RETURNING true",
        rule_id,
        client_id,
        secret,
    )
    return secret if made else None


_OUTCOME_COLUMNS = (
    "reaction_id, kind, phase, outcome, reason, attempt, command_id, recorded_at, event_id"
)


async def outcomes(conn: asyncpg.Connection, event_id: uuid.UUID) -> list[Outcome]:
    """An event's reaction outcomes, oldest first."""
    rows = await conn.fetch(
        f"SELECT {_OUTCOME_COLUMNS} FROM alarm_reaction_outcomes WHERE event_id = $1 "
        "ORDER BY recorded_at, id",
        event_id,
    )
    return [Outcome(**dict(r)) for r in rows]


async def notifications(conn: asyncpg.Connection, event_ids: Sequence[uuid.UUID]) -> list[Outcome]:
    """The notify outcomes of these events (written with their raise or clear)."""
    rows = await conn.fetch(
        f"SELECT {_OUTCOME_COLUMNS} FROM alarm_reaction_outcomes "
        "WHERE event_id = ANY($1::uuid[]) AND kind = 'notify' ORDER BY recorded_at, id",
        list(event_ids),
    )
    return [Outcome(**dict(r)) for r in rows]


# --- the worker ---


@dataclass(frozen=True)
class EventView:
    """What a webhook body and an e-mail say about the event."""

    status: str
    severity: str
    raised_at: datetime
    cleared_at: datetime | None
    trigger_value: float | None
    clear_value: float | None
    message: str | None
    device_serial: str
    device_name: str


@dataclass(frozen=True)
class Job:
    """A claimed job with everything its delivery needs."""

    id: uuid.UUID
    client_id: uuid.UUID
    event_id: uuid.UUID
    reaction_id: uuid.UUID
    rule_id: uuid.UUID
    device_id: uuid.UUID
    phase: str
    kind: str
    attempt: int  # this one, from 1
    rule_name: str
    rule_owner: uuid.UUID | None
    command_template_id: uuid.UUID | None
    parameters: dict[str, Any]
    webhook_url: str | None
    email_to: tuple[str, ...]
    event: EventView
    # The rule's webhook secret (webhook jobs only); never in a repr, so never in a log.
    secret: bytes | None = field(default=None, repr=False)


_CLAIM_SQL = """
WITH due AS (
    SELECT j.id FROM alarm_reaction_jobs j
    WHERE j.done_at IS NULL AND j.due_at <= now()
      -- A failing webhook endpoint's jobs wait for its next try (every N minutes).
      AND NOT EXISTS (SELECT 1 FROM alarm_webhook_health h
                      WHERE h.reaction_id = j.reaction_id AND h.next_attempt_at > now())
      -- A reaction's clear of an event waits for its raise (receivers see them in order).
      AND NOT (j.phase = 'clear' AND EXISTS (
            SELECT 1 FROM alarm_reaction_jobs r
            WHERE r.event_id = j.event_id AND r.reaction_id = j.reaction_id
              AND r.phase = 'raise' AND r.done_at IS NULL))
    ORDER BY j.due_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE alarm_reaction_jobs j
    SET attempts = j.attempts + 1, due_at = now() + make_interval(secs => $2)
    FROM due WHERE j.id = due.id
    RETURNING j.*
)
SELECT c.id, c.client_id, c.event_id, c.reaction_id, c.rule_id, c.device_id, c.phase, c.kind,
       c.attempts AS attempt, ru.name AS rule_name, ru.created_by AS rule_owner,
       r.command_template_id, r.parameters::text AS parameters, r.webhook_url, r.email_to,
       e.status, e.severity, e.raised_at, e.cleared_at, e.trigger_value, e.clear_value,
       e.message, d.serial AS device_serial, d.name AS device_name, s.secret
FROM claimed c
JOIN alarm_reactions r ON r.id = c.reaction_id
JOIN alarm_rules ru ON ru.id = c.rule_id
JOIN alarm_events e ON e.id = c.event_id
JOIN devices d ON d.id = c.device_id
LEFT JOIN alarm_rule_webhook_secrets s ON s.rule_id = c.rule_id AND c.kind = 'webhook'
ORDER BY c.due_at
"""


async def claim_jobs(conn: asyncpg.Connection, limit: int, lease_s: float) -> list[Job]:
    """Take up to ``limit`` due jobs for ``lease_s`` seconds (their attempt counted now, so
    a worker killed mid-delivery still counts it)."""
    rows = await conn.fetch(_CLAIM_SQL, limit, lease_s)
    event_fields = set(EventView.__dataclass_fields__)
    jobs = []
    for r in rows:
        values = dict(r)
        event = EventView(**{k: values.pop(k) for k in event_fields})
        values["parameters"] = json.loads(values["parameters"])
        values["email_to"] = tuple(values["email_to"])
        jobs.append(Job(**values, event=event))
    return jobs


async def record_outcome(
    conn: asyncpg.Connection,
    job: Job,
    outcome: str,
    reason: str = "",
    *,
    command_id: uuid.UUID | None = None,
) -> None:
    await conn.execute(
        "INSERT INTO alarm_reaction_outcomes (client_id, event_id, reaction_id, job_id, phase, "
        "kind, outcome, reason, attempt, command_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, "
        "$9, $10)",
        job.client_id,
        job.event_id,
        job.reaction_id,
        job.id,
        job.phase,
        job.kind,
        outcome,
        reason[:500],
        job.attempt,
        command_id,
    )


async def finish_job(conn: asyncpg.Connection, job_id: uuid.UUID) -> None:
    await conn.execute("UPDATE alarm_reaction_jobs SET done_at = now() WHERE id = $1", job_id)


async def reschedule_job(conn: asyncpg.Connection, job_id: uuid.UUID, due_at: datetime) -> None:
    await conn.execute(
        "UPDATE alarm_reaction_jobs SET due_at = $2 WHERE id = $1 AND done_at IS NULL",
        job_id,
        due_at,
    )


async def webhook_succeeded(conn: asyncpg.Connection, job: Job) -> None:
    await conn.execute(
        "UPDATE alarm_webhook_health SET consecutive_failures = 0, failing_since = NULL, "
        "next_attempt_at = NULL, updated_at = now() WHERE reaction_id = $1",
        job.reaction_id,
    )


async def webhook_failed(
    conn: asyncpg.Connection, job: Job, failing_after: int, retry_at: datetime
) -> bool:
    """Count a failure; True when the endpoint is (now) failing, retried at ``retry_at``."""
    failing: bool = await conn.fetchval(
        """
        INSERT INTO alarm_webhook_health AS h (reaction_id, client_id, consecutive_failures)
        VALUES ($1, $2, 1)
        ON CONFLICT (reaction_id) DO UPDATE
            SET consecutive_failures = h.consecutive_failures + 1, updated_at = now()
        RETURNING consecutive_failures >= $3
        """,
        job.reaction_id,
        job.client_id,
        failing_after,
    )
    if failing:
        await conn.execute(
            "UPDATE alarm_webhook_health SET failing_since = coalesce(failing_since, now()), "
            "next_attempt_at = $2 WHERE reaction_id = $1",
            job.reaction_id,
            retry_at,
        )
    return failing
