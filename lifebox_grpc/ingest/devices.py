"""serial → device lookups for ingest, cached, and invalidated when a device changes."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Iterable

import asyncpg

from lifebox_grpc.store.ingest import DeviceRef, devices_by_serial

DEVICE_CHANNEL = "lifebox_devices"
log = logging.getLogger(__name__)


class DeviceDirectory:
    """Caches what the topic's serial names. Unknown serials are cached briefly too, so a
    device that publishes before it is registered costs one query per few seconds, not one
    per message; that cache is bounded (least recently used out first, `max_unknown`), since
    anyone who can publish can name any number of serials. Known devices are bounded by the
    devices table. A NOTIFY on ``lifebox_devices`` (sent by a trigger on devices and clients)
    drops entries at once; the TTL bounds staleness if a notification is missed. Callers pass
    only serials of valid grammar (:func:`lifebox_grpc.serials.is_valid_serial`)."""

    def __init__(
        self, ttl_s: float = 60.0, negative_ttl_s: float = 5.0, max_unknown: int = 10_000
    ) -> None:
        self._ttl_s = ttl_s
        self._negative_ttl_s = negative_ttl_s
        self._max_unknown = max_unknown
        self._known: dict[str, tuple[DeviceRef, float]] = {}
        self._unknown: OrderedDict[str, float] = OrderedDict()  # serial → expiry, LRU first

    @property
    def unknown_cached(self) -> int:
        return len(self._unknown)

    async def resolve(
        self, conn: asyncpg.Connection, serials: Iterable[str]
    ) -> dict[str, DeviceRef | None]:
        now = time.monotonic()
        found: dict[str, DeviceRef | None] = {}
        missing = []
        for serial in set(serials):
            known = self._known.get(serial)
            if known is not None and known[1] > now:
                found[serial] = known[0]
                continue
            expiry = self._unknown.get(serial)
            if expiry is not None and expiry > now:
                self._unknown.move_to_end(serial)
                found[serial] = None
                continue
            missing.append(serial)
        if missing:
            looked_up = await devices_by_serial(conn, missing)
            for serial in missing:
                ref = looked_up.get(serial)
                found[serial] = ref
                if ref is not None:
                    self._unknown.pop(serial, None)
                    self._known[serial] = (ref, now + self._ttl_s)
                    continue
                self._known.pop(serial, None)
                self._unknown[serial] = now + self._negative_ttl_s
                self._unknown.move_to_end(serial)
            while len(self._unknown) > self._max_unknown:
                self._unknown.popitem(last=False)
        return found

    def invalidate(self, serial: str | None = None) -> None:
        """Forget one serial, or everything (``None``: e.g. a client was suspended)."""
        if serial is None:
            self._known.clear()
            self._unknown.clear()
        else:
            self._known.pop(serial, None)
            self._unknown.pop(serial, None)

    def on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self.invalidate(payload or None)


async def follow_device_changes(dsn: str, directory: DeviceDirectory, stop: asyncio.Event) -> None:
    """LISTEN for device changes for as long as the worker runs, reconnecting after outages.

    Every (re)connection drops the whole cache: changes made while we were not listening
    would otherwise go unnoticed until their TTL.
    """
    import asyncpg

    delay = 0.5
    while not stop.is_set():
        try:
            conn = await asyncpg.connect(dsn)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
            continue
        delay = 0.5
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _c, lost=lost: lost.set())
        try:
            await conn.add_listener(DEVICE_CHANNEL, directory.on_notify)
            directory.invalidate()
            while not stop.is_set() and not lost.is_set() and not conn.is_closed():
                try:
                    await asyncio.wait_for(stop.wait(), 5.0)
                except TimeoutError:
                    # A cheap probe: a dead socket is only noticed when used.
                    await conn.fetchval("SELECT 1", timeout=5)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            log.warning("device-change listener lost its connection; reconnecting")
        finally:
            if not conn.is_closed():
                conn.terminate()
