"""One LISTEN connection per ``serve`` process, for every channel a stream follows.

A stream's hub registers a channel with a callback for each payload and one for gaps (the
connection was lost, so notices sent until it is back are lost too: streams must read what
they may have missed). The connection is opened while at least one channel is registered
and closed, on purpose, when the last one goes; that close is logged as a release, not as a
loss. When the connection is lost, every channel is told of the gap and the next
:meth:`Listener.ensure_listening` (streams call it as they poll) reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg

from lifebox_grpc.streams import metrics

log = logging.getLogger(__name__)

APPLICATION_NAME = "lifebox-serve-listen"
_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)

OnNotice = Callable[[str], None]
OnGap = Callable[[], None]


@dataclass(eq=False)
class _Channel:
    name: str
    on_notice: OnNotice
    on_gap: OnGap
    users: int = 0


class Listener:
    """The process's LISTEN connection; :meth:`shared` gives the one for a DSN."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._channels: list[_Channel] = []
        self._conn: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def shared(cls, dsn: str) -> Listener:
        """The listener of this event loop for ``dsn``: every hub of the process uses it, so
        the process holds one connection however many kinds of stream are open."""
        of_loop = _SHARED.setdefault(asyncio.get_running_loop(), {})
        listener = of_loop.get(dsn)
        if listener is None:
            listener = of_loop[dsn] = cls(dsn)
        return listener

    @property
    def listening(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    @asynccontextmanager
    async def channel(self, name: str, on_notice: OnNotice, on_gap: OnGap) -> AsyncIterator[None]:
        """Deliver ``name``'s payloads to ``on_notice`` until the block exits. A hub may
        enter this once per stream: the same (name, callbacks) is registered once and
        counted. If the connection cannot be opened now, ``on_gap`` is called (the caller
        polls)."""
        entry = next(
            (
                c
                for c in self._channels
                if (c.name, c.on_notice, c.on_gap) == (name, on_notice, on_gap)
            ),
            None,
        )
        if entry is None:
            entry = _Channel(name, on_notice, on_gap)
            self._channels.append(entry)
        entry.users += 1
        try:
            if self.listening:
                if entry.users == 1 and sum(c.name == name for c in self._channels) == 1:
                    assert self._conn is not None
                    try:
                        await self._conn.add_listener(name, self._dispatch)
                    except _ERRORS as exc:
                        log.warning("stream listener lost while adding a channel: %s", exc)
            else:
                await self.ensure_listening()
            if not self.listening:
                on_gap()
            yield
        finally:
            entry.users -= 1
            if not entry.users:
                self._channels.remove(entry)
            await self._release(name)

    async def ensure_listening(self) -> None:
        """Open (or reopen after a loss) the connection, listening on every registered
        channel; on failure streams keep polling and the next call retries."""
        async with self._lock:
            if self.listening or not self._channels:
                return
            try:
                conn = await asyncpg.connect(
                    self._dsn, server_settings={"application_name": APPLICATION_NAME}
                )
            except _ERRORS as exc:
                log.warning("stream listener unavailable: %s", exc)
                return
            try:
                for name in {c.name for c in self._channels}:
                    await conn.add_listener(name, self._dispatch)
            except _ERRORS as exc:
                log.warning("stream listener unavailable: %s", exc)
                with contextlib.suppress(*_ERRORS):
                    await conn.close(timeout=5)
                return
            conn.add_termination_listener(self._lost)
            self._conn = conn
        # Whatever was committed while nobody listened must be read by time.
        for entry in list(self._channels):
            entry.on_gap()

    def _dispatch(self, _conn: object, _pid: int, channel: str, payload: str) -> None:
        for entry in self._channels:
            if entry.name == channel:
                entry.on_notice(payload)

    def _lost(self, conn: object) -> None:
        if conn is not self._conn:
            return  # a connection released on purpose (see _release)
        log.warning("stream listener connection lost; streams poll until it is back")
        metrics.LISTENER_LOSSES.inc()
        self._conn = None
        for entry in list(self._channels):
            entry.on_gap()

    async def _release(self, name: str) -> None:
        """Stop listening on ``name`` when no stream wants it; close the connection when
        no channel is left (a release, logged as one: it is not a loss)."""
        async with self._lock:
            conn = self._conn
            if conn is None or conn.is_closed():
                return
            if not self._channels:
                self._conn = None  # before closing: _lost then knows it was on purpose
                log.info("stream listener released: no stream is open")
                with contextlib.suppress(*_ERRORS):
                    await conn.close(timeout=5)
            elif all(c.name != name for c in self._channels):
                with contextlib.suppress(*_ERRORS):
                    await conn.remove_listener(name, self._dispatch)


# One listener per event loop and DSN (a test process runs several servers in one loop: they
# share it, as the streams of one serve process do).
_SHARED: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, Listener]] = (
    weakref.WeakKeyDictionary()
)
