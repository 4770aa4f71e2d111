"""Live presence changes for StreamDeviceEvents: one LISTEN connection per `serve` process.

Every presence change is a ``device_connections`` row whose transaction also notifies
``lifebox_presence`` with ``{"id", "device_id", "client_id"}`` (migration 0055), delivered
only when it commits. The hub listens while at least one stream is open and queues each
notice on every subscription; a stream keeps the ones its caller may see and reads those
rows (committed, by id). Notices carry no row data, so a stream never sends a change whose
transaction rolled back, and reads each row once.

When the listener is lost, notices sent before it is back are lost: every subscription is
told to resynchronise (it reads the rows recorded since its last one and skips those it
sent), and streams poll that way until the listener is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg

from lifebox_grpc.store.presence import CHANNEL, decode_notice

log = logging.getLogger(__name__)

# Notices one subscription may hold; past this it resynchronises by time instead.
MAX_QUEUED = 100_000


@dataclass(frozen=True)
class Notice:
    """One committed presence change: its history row and whose it is."""

    id: int
    device_id: uuid.UUID
    client_id: uuid.UUID


@dataclass(frozen=True)
class Update:
    """Notices in arrival order; ``resync``: some may have been lost, read by time."""

    notices: list[Notice]
    resync: bool


class Subscription:
    """One stream's queue of the notices ``accepts`` lets in (None: all)."""

    def __init__(self, accepts: Callable[[Notice], bool] | None = None) -> None:
        self.accepts = accepts
        self._notices: list[Notice] = []
        self._resync = False
        self._event = asyncio.Event()

    def add(self, notice: Notice) -> None:
        if len(self._notices) >= MAX_QUEUED:
            log.warning("presence stream too slow for its notices; resynchronising")
            self._notices = []
            self.mark_resync()
            return
        self._notices.append(notice)
        self._event.set()

    def mark_resync(self) -> None:
        self._resync = True
        self._event.set()

    async def wait(self, timeout: float | None) -> Update:
        """The next update; after ``timeout`` seconds without one, a resync (a poll)."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            self._resync = True
        update = Update(self._notices, self._resync)
        self._notices, self._resync = [], False
        self._event.clear()
        return update


class PresenceHub:
    """The per-process hub; :meth:`subscribe` is all a stream uses."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._subscriptions: set[Subscription] = set()
        self._conn: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()

    @property
    def listening(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    @asynccontextmanager
    async def subscribe(
        self, accepts: Callable[[Notice], bool] | None = None
    ) -> AsyncIterator[Subscription]:
        """Queue every committed change ``accepts`` lets in (None: all; it is asked as each
        notice arrives, so it may follow a stream's changing audience) from now on (the
        LISTEN is up when this yields, or the subscription is marked to resynchronise) until
        the block exits."""
        sub = Subscription(accepts)
        self._subscriptions.add(sub)
        try:
            await self.ensure_listening()
            if not self.listening:
                sub.mark_resync()
            yield sub
        finally:
            self._subscriptions.discard(sub)
            if not self._subscriptions:
                await self._close()

    async def ensure_listening(self) -> None:
        """Open (or reopen after a loss) the LISTEN connection; on failure streams poll and
        the next call retries."""
        async with self._lock:
            if self.listening or not self._subscriptions:
                return
            try:
                conn = await asyncpg.connect(
                    self._dsn, server_settings={"application_name": "lifebox-serve-presence"}
                )
                await conn.add_listener(CHANNEL, self._notified)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("presence listener unavailable: %s", exc)
                return
            conn.add_termination_listener(self._lost)
            was_lost = self._conn is not None
            self._conn = conn
        if was_lost:
            for sub in self._subscriptions:
                sub.mark_resync()

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        try:
            notice = Notice(*decode_notice(payload))
        except (ValueError, KeyError, TypeError):
            log.warning("unreadable presence notification ignored")
            return
        for sub in self._subscriptions:
            if sub.accepts is None or sub.accepts(notice):
                sub.add(notice)

    def _lost(self, _conn: object) -> None:
        log.warning("presence listener connection lost; streams poll until it is back")
        for sub in self._subscriptions:
            sub.mark_resync()

    async def _close(self) -> None:
        async with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None and not self._subscriptions:
                with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                    await conn.close(timeout=5)
            elif conn is not None:
                self._conn = conn
