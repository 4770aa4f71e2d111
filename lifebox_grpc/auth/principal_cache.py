"""A short-lived, per-process cache of principals, emptied by NOTIFY the moment they change.

Reading a caller's principal costs a database round trip on every call; most calls of one
user come seconds apart with nothing changed. The cache keeps each user's
:class:`~lifebox_grpc.store.users.PrincipalRecord` for ``principal_cache_seconds`` and
promises:

- Entries are served only while this process LISTENs on :data:`CHANNEL`. Triggers
  (migrations 0031 and 0038) notify on every change a principal is made of: a user's status,
  role, e-mail, password or tenant, their device assignments, a role's permissions, a
  client's status, the end of one of their sessions (a refresh token revoked or deleted).
  A notification drops the entry (or, with an empty payload, every entry) before the next
  call of that user is served. The process that ends a session also drops the entry itself
  (:meth:`invalidate`), without waiting for its own notification.
- While the listener is down nothing is served from the cache, and every (re)connection
  drops every entry: a change made while nobody listened is never missed.
- A load that raced with a change is not stored: an entry is stored only if no notification
  arrived since the load began (:meth:`ticket`), so a stale read cannot outlive the change.
- The TTL bounds the damage of a notification that is lost without the connection
  noticing (a half-open socket between probes).

The token-dependent checks (password changed after the token was issued, the token's
tenant, its session family among the record's live ones) are not cached: callers apply them
to the record on every call (:mod:`lifebox_grpc.auth.principal_loader`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid

import asyncpg

from lifebox_grpc.store.users import PrincipalRecord

log = logging.getLogger(__name__)

CHANNEL = "lifebox_principals"
PROBE_SECONDS = 5.0
MAX_ENTRIES = 10_000


class PrincipalCache:
    """Principal records by user id; one per `serve` process, with its own LISTEN connection."""

    def __init__(self, dsn: str, ttl_seconds: float, *, max_entries: int = MAX_ENTRIES) -> None:
        self._dsn = dsn
        self.ttl_seconds = ttl_seconds
        self._max_entries = max_entries
        self._entries: dict[uuid.UUID, tuple[float, PrincipalRecord]] = {}
        self._epoch = 0
        self._listening = False
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    @property
    def enabled(self) -> bool:
        return self.ttl_seconds > 0

    @property
    def listening(self) -> bool:
        """True while notifications can reach the cache (and so entries may be served)."""
        return self._listening

    @property
    def epoch(self) -> int:
        """Counts invalidations: it moves whenever a notification or reconnection arrives."""
        return self._epoch

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, user_id: uuid.UUID) -> PrincipalRecord | None:
        """The user's record if fresh and the listener is up; None means "read the database"."""
        if not self._listening:
            return None
        entry = self._entries.get(user_id)
        if entry is None:
            return None
        if time.monotonic() >= entry[0]:
            self._entries.pop(user_id, None)
            return None
        return entry[1]

    def ticket(self) -> int:
        """Taken before a database load and handed to :meth:`put` with its result."""
        return self._epoch

    def put(self, ticket: int, record: PrincipalRecord) -> None:
        """Store ``record`` unless anything was invalidated since ``ticket`` was taken."""
        if not self._listening or ticket != self._epoch:
            return
        if len(self._entries) >= self._max_entries:
            self._evict()
        self._entries[record.user_id] = (time.monotonic() + self.ttl_seconds, record)

    def _evict(self) -> None:
        now = time.monotonic()
        for user_id in [u for u, (expires, _) in self._entries.items() if expires <= now]:
            del self._entries[user_id]
        while len(self._entries) >= self._max_entries:
            # Insertion order: the oldest entry goes first.
            del self._entries[next(iter(self._entries))]

    def invalidate(self, user_id: uuid.UUID | None = None) -> None:
        """Drop one user's entry, or every entry when ``user_id`` is None."""
        self._epoch += 1
        if user_id is None:
            self._entries.clear()
        else:
            self._entries.pop(user_id, None)

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        try:
            user_id = uuid.UUID(payload) if payload else None
        except ValueError:
            log.warning("unreadable principal notification: dropping every cached principal")
            user_id = None
        self.invalidate(user_id)

    # -- the listener -----------------------------------------------------------------------

    def start(self) -> None:
        """Start following changes (idempotent; a no-op when the cache is off)."""
        if self.enabled and self._task is None:
            self._task = asyncio.create_task(self._follow(), name="principal-cache-listener")

    async def close(self) -> None:
        """Stop listening and forget every entry."""
        self._stop.set()
        if self._task is not None:
            task, self._task = self._task, None
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._listening = False
        self.invalidate()

    async def _follow(self) -> None:
        """LISTEN until closed, reconnecting after outages; every (re)connection drops every
        entry, and nothing is served while disconnected."""
        delay = 0.5
        while not self._stop.is_set():
            try:
                conn = await asyncpg.connect(
                    self._dsn, server_settings={"application_name": "lifebox-serve-principals"}
                )
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.5
            lost = asyncio.Event()
            conn.add_termination_listener(lambda _c, lost=lost: lost.set())
            try:
                await conn.add_listener(CHANNEL, self._notified)
                self.invalidate()
                self._listening = True
                while not self._stop.is_set() and not lost.is_set() and not conn.is_closed():
                    try:
                        await asyncio.wait_for(_first(self._stop, lost), PROBE_SECONDS)
                    except TimeoutError:
                        # A dead socket is only noticed when used.
                        await conn.fetchval("SELECT 1", timeout=PROBE_SECONDS)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                log.warning("principal cache listener lost its connection; reconnecting")
            finally:
                self._listening = False
                self.invalidate()
                if not conn.is_closed():
                    conn.terminate()


async def _first(*events: asyncio.Event) -> None:
    """Return once any of ``events`` is set."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
