"""CommandService: StreamCommandUpdates (catch-up from a time, then live)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from lifebox.v1 import commands_pb2
from lifebox_grpc.auth.principal import Principal, require_principal
from lifebox_grpc.errors import ErrorCollector
from lifebox_grpc.interceptors.stream_access import recheck_stream
from lifebox_grpc.services.commands.access import command_scope
from lifebox_grpc.services.commands.base import CommandRpcs
from lifebox_grpc.services.commands.fanout import Update
from lifebox_grpc.services.commands.mapping import command_pb, execution_pb
from lifebox_grpc.services.common import scoped
from lifebox_grpc.services.device_access import (
    ASSIGNED_ONLY_ROLES,
    parse_device_ids,
    require_devices,
    require_found,
)
from lifebox_grpc.store import commands as command_store

MAX_CATCH_UP = timedelta(hours=24)
CATCH_UP_PAGE = 1000
MAX_STREAM_DEVICES = 1000
SEEN_MEMORY = 50_000
# While the process's listener is down, streams read by time this often.
POLL_SECONDS = 5.0


class StreamRpcs(CommandRpcs):
    """Live status changes of the caller's visible commands."""

    async def StreamCommandUpdates(
        self, request: commands_pb2.StreamCommandUpdatesRequest, context: Any
    ) -> AsyncIterator[commands_pb2.StreamCommandUpdatesResponse]:
        principal = require_principal()
        errors = ErrorCollector()
        wanted: list[uuid.UUID] | None = None
        if request.device_ids:
            wanted = parse_device_ids(
                errors, "device_ids", request.device_ids, most=MAX_STREAM_DEVICES
            )
        since = None
        if request.HasField("start_time"):
            since = request.start_time.ToDatetime(tzinfo=UTC)
            if since < datetime.now(UTC) - MAX_CATCH_UP:
                errors.add("start_time", "at most 24 hours back")
        errors.raise_if_any()
        client_id, visible = command_scope(principal)
        if wanted is not None:
            async with scoped(self.pool, principal) as conn:
                await require_devices(conn, principal, wanted)
            visible = wanted

        def recheck(current: Principal) -> None:
            """At each re-authorization: named devices no longer visible end the stream
            (NOT_FOUND, like StreamTelemetry); otherwise it follows the caller's devices now."""
            nonlocal visible
            if wanted is None:
                visible = command_scope(current)[1]
            elif current.role in ASSIGNED_ONLY_ROLES:
                require_found(wanted, frozenset(current.assigned_device_ids))

        recheck_stream(recheck)
        seen: dict[uuid.UUID, None] = {}
        last_at = since or datetime.now(UTC)
        floor = last_at  # a resync never reaches before what the caller asked for

        async def emit(
            rows: list[command_store.Execution],
            commands: dict[uuid.UUID, command_store.Command] | None = None,
        ) -> list[Any]:
            nonlocal last_at
            fresh = [r for r in rows if r.id not in seen]
            if not fresh:
                return []
            if commands is None:
                async with scoped(self.pool, principal) as conn:
                    commands = await command_store.get_commands(
                        conn, list({r.command_id for r in fresh})
                    )
            out = []
            for row in fresh:
                seen[row.id] = None
                last_at = max(last_at, row.at)
                command = commands.get(row.command_id)
                if command is None:
                    continue
                out.append(
                    commands_pb2.StreamCommandUpdatesResponse(
                        execution=execution_pb(row), command=command_pb(command)
                    )
                )
            while len(seen) > SEEN_MEMORY:
                seen.pop(next(iter(seen)))
            return out

        async def since_time(start: datetime) -> list[Any]:
            out = []
            cursor = start
            while True:
                async with scoped(self.pool, principal) as conn:
                    rows = await command_store.executions_since(
                        conn, client_id, visible, cursor, CATCH_UP_PAGE
                    )
                out += await emit(rows)
                if len(rows) < CATCH_UP_PAGE:
                    return out
                cursor = rows[-1].at

        def accepts(update: Update) -> bool:
            return client_id is None or update.client_id == client_id

        hub = self.fanout
        async with hub.subscribe(accepts) as sub:
            if since is not None:
                for message in await since_time(since):
                    yield message
            while True:
                update = await sub.wait(None if hub.listening else POLL_SECONDS)
                ids = [u.execution_id for u in update.items]
                allowed = None if visible is None else set(visible)
                if ids:
                    # One transaction reads the rows and their commands as they are now.
                    async with scoped(self.pool, principal) as conn:
                        rows = [
                            r
                            for r in await command_store.executions_by_id(conn, ids)
                            if (client_id is None or r.client_id == client_id)
                            and (allowed is None or r.device_id in allowed)
                            and r.id not in seen
                        ]
                        commands = await command_store.get_commands(
                            conn, list({r.command_id for r in rows})
                        )
                    for message in await emit(rows, commands):
                        yield message
                if update.resync:
                    if not hub.listening:
                        await hub.ensure_listening()
                    # Announcements may be lost: read by time from the newest sent, minus a
                    # margin for transactions that committed after newer ones.
                    resume = max(floor, last_at - timedelta(seconds=5))
                    for message in await since_time(resume):
                        yield message
