"""Live command updates for StreamCommandUpdates: one LISTEN connection per `serve` process.

Every command_executions row notifies ``lifebox_command_updates`` with "client_id:row id" as
it commits (0060), whoever wrote it (API, dispatcher, ingest). The hub listens while at least
one stream is open and queues each row id on the streams of that client (staff streams get
every client's); a stream reads the rows itself, under its own scope, so a stream never sees
what its caller may not. If the listener drops, streams are told to resynchronise by time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

log = logging.getLogger(__name__)

CHANNEL = "lifebox_command_updates"
MAX_QUEUED = 100_000


class Subscription:
    """One stream's queue of announced trail rows."""

    def __init__(self, client_id: uuid.UUID | None) -> None:
        self.client_id = client_id
        self.ids: list[uuid.UUID] = []
        self.resync = False
        self.event = asyncio.Event()

    def push(self, execution_id: uuid.UUID) -> None:
        if len(self.ids) >= MAX_QUEUED:
            self.resync = True
            self.ids.clear()
        else:
            self.ids.append(execution_id)
        self.event.set()

    def take(self) -> tuple[list[uuid.UUID], bool]:
        ids, resync = self.ids, self.resync
        self.ids, self.resync = [], False
        self.event.clear()
        return ids, resync


class CommandFanout:
    """The process's listener and its subscriptions."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._subs: set[Subscription] = set()
        self._task: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()

    @asynccontextmanager
    async def subscribe(self, client_id: uuid.UUID | None) -> AsyncIterator[Subscription]:
        """A subscription to ``client_id``'s rows (None: every client's), live once the
        listener is (the caller reads its catch-up after entering)."""
        sub = Subscription(client_id)
        self._subs.add(sub)
        if self._task is None or self._task.done():
            self._listening.clear()
            self._task = asyncio.create_task(self._listen())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._listening.wait(), 10)
        try:
            yield sub
        finally:
            self._subs.discard(sub)

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        client_text, _, row_text = payload.partition(":")
        try:
            client_id, row_id = uuid.UUID(client_text), uuid.UUID(row_text)
        except ValueError:
            return
        for sub in self._subs:
            if sub.client_id is None or sub.client_id == client_id:
                sub.push(row_id)

    async def _listen(self) -> None:
        while self._subs:
            try:
                conn = await asyncpg.connect(self._dsn)
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("command updates LISTEN failed", extra={"error": str(exc)})
                await asyncio.sleep(1)
                continue
            try:
                await conn.add_listener(CHANNEL, self._on_notify)
                self._listening.set()
                while self._subs and not conn.is_closed():  # noqa: ASYNC110 (polls both)
                    await asyncio.sleep(0.5)
            finally:
                self._listening.clear()
                for sub in self._subs:
                    sub.resync = True
                    sub.event.set()
                with contextlib.suppress(Exception):
                    await conn.close()
