"""Live telemetry for StreamTelemetry: one LISTEN connection per `serve` process, fanned out.

Ingest workers run ``pg_notify('lifebox_telemetry', {"device_id": ...})`` after each
committed batch. The hub holds one connection listening on that channel while at least one
stream is open, and marks each subscribed stream "dirty" for the notified device. It carries
no rows: a stream then reads the committed rows from the table itself (time after the last
it sent), so it does not matter which replica or worker wrote them, a slow stream holds only
a set of device ids, and a missed notification is repaired by the stream's periodic poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

import asyncpg

log = logging.getLogger(__name__)

CHANNEL = "lifebox_telemetry"


class Subscription:
    """One stream's interest: its devices and which of them have news."""

    def __init__(self, device_ids: Iterable[uuid.UUID]) -> None:
        self.device_ids = frozenset(device_ids)
        self._dirty: set[uuid.UUID] = set()
        self._event = asyncio.Event()

    def mark(self, device_id: uuid.UUID) -> None:
        self._dirty.add(device_id)
        self._event.set()

    def mark_all(self) -> None:
        self._dirty |= self.device_ids
        self._event.set()

    async def wait(self, timeout: float) -> set[uuid.UUID]:
        """The devices with news; after ``timeout`` without any, all of them (a poll that
        repairs a missed notification or a reconnect of the listener)."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            self.mark_all()
        dirty, self._dirty = self._dirty, set()
        self._event.clear()
        return dirty


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
            sub.mark_all()

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        try:
            device_id = uuid.UUID(json.loads(payload)["device_id"])
        except (ValueError, KeyError, TypeError):
            log.warning("unreadable telemetry notification ignored")
            return
        for sub in self._by_device.get(device_id, ()):
            sub.mark(device_id)

    def _lost(self, _conn: object) -> None:
        log.warning("telemetry listener connection lost; streams poll until it is back")
        self._conn = None

    async def _close(self) -> None:
        async with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None and not self._subscriptions:
                with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                    await conn.close(timeout=5)
            elif conn is not None:
                self._conn = conn
