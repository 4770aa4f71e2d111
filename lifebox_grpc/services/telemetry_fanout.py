"""Live telemetry for StreamTelemetry: one LISTEN connection per `serve` process, fanned out.

After batches commit, ingest workers notify ``lifebox_telemetry`` with, per device, the
commits that added its rows: ``{"device_id", "client_id", "commits": [[xid, min_us, max_us],
...]}`` (:mod:`lifebox_grpc.store.telemetry_notices`). The hub holds one connection listening
on that channel while at least one stream is open and queues each commit, in arrival order,
on every stream subscribed to the device. It carries no rows: a stream reads exactly that
commit's rows from the table (by device, time range and ``xmin``), so it does not matter
which replica or worker wrote them, nor in which order of reading time batches commit.

When the listener is lost, notifications sent before it is back are lost too: every
stream is told to resynchronise (:attr:`Update.resync`), which it does by reading rows newer
than the last it sent, and streams poll that way until the listener is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg

from lifebox_grpc.store.telemetry_notices import CHANNEL, Commit, decode_notice

log = logging.getLogger(__name__)

# Commits one stream may have queued; past this it resynchronises by time instead.
MAX_QUEUED_COMMITS = 100_000


@dataclass(frozen=True)
class Update:
    """What a stream has to catch up on: ``commits`` per device in arrival order, then (if
    ``resync``) everything newer than what it sent, since notifications may have been lost."""

    commits: dict[uuid.UUID, list[Commit]]
    resync: bool


class Subscription:
    """One stream's interest: its devices and the commits announced for them.

    A new subscription starts with ``resync`` set: a stream's first step is its catch-up.
    """

    def __init__(self, device_ids: Iterable[uuid.UUID]) -> None:
        self.device_ids = frozenset(device_ids)
        self._commits: dict[uuid.UUID, list[Commit]] = {}
        # Commits announced before the resync mark: handled before the resync read.
        self._before_resync: dict[uuid.UUID, list[Commit]] = {}
        self._pending = 0  # commits queued in both
        self._resync = True
        self._event = asyncio.Event()
        self._event.set()

    def add(self, device_id: uuid.UUID, commits: list[Commit]) -> None:
        self._pending += len(commits)
        if self._pending > MAX_QUEUED_COMMITS:
            # A stream that does not keep up must not hold unbounded memory: it falls back to
            # a resync by time (late readings among the dropped commits are then missed).
            log.warning("stream too slow for its commits; resynchronising by time")
            self._commits, self._before_resync, self._pending = {}, {}, 0
            self.mark_resync()
            return
        self._commits.setdefault(device_id, []).extend(commits)
        self._event.set()

    def mark_resync(self) -> None:
        for device_id, commits in self._commits.items():
            self._before_resync.setdefault(device_id, []).extend(commits)
        self._commits = {}
        self._resync = True
        self._event.set()

    async def wait(self, timeout: float | None) -> Update:
        """The next update; after ``timeout`` seconds without any, a resync (a poll)."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            self.mark_resync()
        if self._resync:
            update = Update(self._before_resync, True)
            self._before_resync, self._resync = {}, False
            if not self._commits:
                self._event.clear()
        else:
            update = Update(self._commits, False)
            self._commits = {}
            self._event.clear()
        self._pending -= sum(len(c) for c in update.commits.values())
        return update


class TelemetryFanout:
    """The per-process hub. :meth:`subscribe` is all a stream uses."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._by_device: dict[uuid.UUID, set[Subscription]] = {}
        self._subscriptions: set[Subscription] = set()
        self._conn: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()

    @property
    def listening(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    @asynccontextmanager
    async def subscribe(self, device_ids: Iterable[uuid.UUID]) -> AsyncIterator[Subscription]:
        """Listen for ``device_ids`` (before the caller's catch-up read, so nothing committed
        in between is missed) until the block exits."""
        sub = Subscription(device_ids)
        self._subscriptions.add(sub)
        for device_id in sub.device_ids:
            self._by_device.setdefault(device_id, set()).add(sub)
        try:
            await self.ensure_listening()
            yield sub
        finally:
            self._subscriptions.discard(sub)
            for device_id in sub.device_ids:
                subs = self._by_device.get(device_id)
                if subs is not None:
                    subs.discard(sub)
                    if not subs:
                        del self._by_device[device_id]
            if not self._subscriptions:
                await self._close()

    async def ensure_listening(self) -> None:
        """Open (or reopen after a loss) the LISTEN connection; on failure the streams keep
        polling and the next call retries."""
        async with self._lock:
            if self.listening or not self._subscriptions:
                return
            try:
                conn = await asyncpg.connect(
                    self._dsn, server_settings={"application_name": "lifebox-serve-listen"}
                )
                await conn.add_listener(CHANNEL, self._notified)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("telemetry listener unavailable: %s", exc)
                return
            conn.add_termination_listener(self._lost)
            self._conn = conn
        # Rows committed while nobody listened are found by a read of every device.
        for sub in self._subscriptions:
            sub.mark_resync()

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        try:
            device_id, commits = decode_notice(payload)
        except ValueError:
            log.warning("unreadable telemetry notification ignored")
            return
        for sub in self._by_device.get(device_id, ()):
            sub.add(device_id, commits)

    def _lost(self, _conn: object) -> None:
        log.warning("telemetry listener connection lost; streams poll until it is back")
        self._conn = None
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
