"""Alarm reactions: reactions inserted as the owner, events raised and cleared with their
changes (the trigger enqueues), a local webhook receiver, an in-process worker and a
`lifebox reactions` subprocess, outcomes read back."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp import web

from lifebox_grpc.alarms.reactions.mail import OutboxMailSender
from lifebox_grpc.alarms.reactions.worker import ReactionWorker, http_session
from lifebox_grpc.config import Settings
from lifebox_grpc.runtime.ports import free_port
from lifebox_grpc.store.pool import tenant_transaction
from tests.helpers.processes import MetricsProcess


async def make_reaction(
    conn: asyncpg.Connection,
    client_id: uuid.UUID,
    rule_id: uuid.UUID,
    kind: str,
    *,
    timing: str = "raise",
    webhook_url: str | None = None,
    template_code: str | None = None,
    parameters: dict[str, Any] | None = None,
    email_to: Sequence[str] = (),
) -> uuid.UUID:
    """A reaction of the rule (a webhook also gives the rule a secret if it has none)."""
    async with tenant_transaction(conn, None, staff=True):
        template_id = None
        if template_code is not None:
            template_id = await conn.fetchval(
                "SELECT id FROM command_templates WHERE code = $1 AND client_id IS NULL",
                template_code,
            )
        reaction_id: uuid.UUID = await conn.fetchval(
            "INSERT INTO alarm_reactions (client_id, rule_id, kind, timing, webhook_url, "
            "command_template_id, parameters, email_to) VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, "
            "$8) RETURNING id",
            client_id,
            rule_id,
            kind,
            timing,
            webhook_url,
            template_id,
            json.dumps(parameters or {}),
            list(email_to),
        )
        if kind == "webhook":
            await conn.execute(
                "INSERT INTO alarm_rule_webhook_secrets (rule_id, client_id, secret) "
                "VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                rule_id,
                client_id,
                secrets.token_bytes(32),
            )
    return reaction_id


async def rule_secret(conn: asyncpg.Connection, rule_id: uuid.UUID) -> bytes:
    async with tenant_transaction(conn, None, staff=True):
        secret: bytes = await conn.fetchval(
            "SELECT secret FROM alarm_rule_webhook_secrets WHERE rule_id = $1", rule_id
        )
    return secret


async def set_owner(conn: asyncpg.Connection, rule_id: uuid.UUID, user_id: uuid.UUID) -> None:
    async with tenant_transaction(conn, None, staff=True):
        await conn.execute("UPDATE alarm_rules SET created_by = $2 WHERE id = $1", rule_id, user_id)


async def clear_event(conn: asyncpg.Connection, event_id: uuid.UUID, at: datetime) -> None:
    """Clear an open event with its 'cleared' change, as ingest would."""
    async with tenant_transaction(conn, None, staff=True):
        row = await conn.fetchrow(
            "UPDATE alarm_events SET status = 'cleared_unack', cleared_at = $2, clear_value = 1 "
            "WHERE id = $1 RETURNING client_id, rule_id, device_id",
            event_id,
            at,
        )
        await conn.execute(
            "INSERT INTO alarm_event_changes (client_id, event_id, rule_id, device_id, change, "
            "status, changed_at) VALUES ($1, $2, $3, $4, 'cleared', 'cleared_unack', $5)",
            row["client_id"],
            event_id,
            row["rule_id"],
            row["device_id"],
            at,
        )


async def outcomes_of(conn: asyncpg.Connection, event_id: uuid.UUID) -> list[asyncpg.Record]:
    async with tenant_transaction(conn, None, staff=True):
        return list(
            await conn.fetch(
                "SELECT reaction_id, kind, phase, outcome, reason, attempt, command_id, job_id "
                "FROM alarm_reaction_outcomes WHERE event_id = $1 ORDER BY recorded_at, id",
                event_id,
            )
        )


async def jobs_of(conn: asyncpg.Connection, event_id: uuid.UUID) -> list[asyncpg.Record]:
    async with tenant_transaction(conn, None, staff=True):
        return list(
            await conn.fetch(
                "SELECT id, reaction_id, phase, kind, attempts, due_at, done_at "
                "FROM alarm_reaction_jobs WHERE event_id = $1 ORDER BY created_at, id",
                event_id,
            )
        )


async def make_due(conn: asyncpg.Connection, event_id: uuid.UUID) -> None:
    """Move the event's waiting jobs (and failing endpoints' next tries) to now."""
    async with tenant_transaction(conn, None, staff=True):
        await conn.execute(
            "UPDATE alarm_reaction_jobs SET due_at = now() WHERE event_id = $1 AND done_at IS NULL",
            event_id,
        )
        await conn.execute(
            "UPDATE alarm_webhook_health SET next_attempt_at = now() WHERE reaction_id IN "
            "(SELECT reaction_id FROM alarm_reaction_jobs WHERE event_id = $1)",
            event_id,
        )


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: datetime


@dataclass
class Receiver:
    """A local webhook endpoint answering each POST with the next status of ``statuses``
    (then 200), recording what it got; ``hold`` makes it wait before answering."""

    url: str
    statuses: list[int] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    hold: asyncio.Event | None = None
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def payloads(self) -> list[dict[str, Any]]:
        return [json.loads(r.body) for r in self.received]


@asynccontextmanager
async def webhook_receiver(statuses: Sequence[int] = ()) -> AsyncIterator[Receiver]:
    port = free_port()
    receiver = Receiver(f"http://127.0.0.1:{port}/hook", list(statuses))

    async def handle(request: web.Request) -> web.Response:
        receiver.received.append(
            Received(dict(request.headers), await request.read(), datetime.now(UTC))
        )
        receiver.arrived.set()
        if receiver.hold is not None:
            await receiver.hold.wait()
        status = receiver.statuses.pop(0) if receiver.statuses else 200
        return web.Response(status=status, text="ok")

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield receiver
    finally:
        if receiver.hold is not None:
            receiver.hold.set()
        await runner.cleanup()


@asynccontextmanager
async def reaction_worker(app_dsn: str, settings: Settings) -> AsyncIterator[ReactionWorker]:
    """An in-process worker on the application role (passes run with ``run_once``)."""
    pool = await asyncpg.create_pool(app_dsn, min_size=1, max_size=4)
    session = http_session(settings)
    outbox = OutboxMailSender(settings.home.resolve() / "outbox")
    try:
        yield ReactionWorker(pool, settings, session, outbox)
    finally:
        await session.close()
        await pool.close()


@dataclass
class ReactionsProcess(MetricsProcess):
    """One `lifebox reactions` subprocess."""

    database_url: str
    home: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    metrics_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {
            **os.environ,
            "LIFEBOX_DATABASE_URL": self.database_url,
            "LIFEBOX_HOME": str(self.home),
            "LIFEBOX_REACTIONS_METRICS_PORT": str(self.metrics_port),
            "LIFEBOX_LOG_LEVEL": "WARNING",
            **self.extra_env,
        }
        self._launch("reactions", env, "lifebox_alarm_reactions_up", "reaction worker up", None)


@contextmanager
def running_reactions(
    database_url: str, home: Path, env: dict[str, str] | None = None
) -> Iterator[ReactionsProcess]:
    process = ReactionsProcess(database_url, home, extra_env=env or {})
    process.start()
    try:
        yield process
    finally:
        process.stop()
