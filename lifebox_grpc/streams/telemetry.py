"""Announced telemetry commits, each read once per ``serve`` process for all its streams.

Ingest notifies ``lifebox_telemetry`` with, per device, the commits that added its rows
(:mod:`lifebox_grpc.store.telemetry_notices`). Each announced commit of a device some stream
follows becomes one :class:`CommitRows`, queued at once (so its place relative to resync
marks is kept) on every subscription following the device whose caller's tenant it is. One
reader task reads the pending commits of the whole process together (up to
:data:`READ_BATCH` per statement, the union of the fields their followers want, in a
transaction scoped to the commit's tenant, so row-level security still applies) and hands
the rows to every follower in memory. Streams then take what their own catch-up did not
send (:mod:`lifebox_grpc.services.telemetry_stream`).

Before this, every stream ran its own read per commit: N streams over a device cost N
statements per commit, and each statement's cost grew with the table (see
:data:`lifebox_grpc.store.telemetry.ROWS_OF_COMMITS_SQL`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import asyncpg

from lifebox_grpc.store import telemetry as store
from lifebox_grpc.store.pool import tenant_transaction
from lifebox_grpc.store.telemetry_notices import CHANNEL, Commit, decode_notice_of_client
from lifebox_grpc.streams import limits, metrics
from lifebox_grpc.streams.listener import Listener
from lifebox_grpc.streams.subscription import Subscription

log = logging.getLogger(__name__)

# Commits one statement reads at most.
READ_BATCH = 500
_FIELD_ORDER = {name: i for i, name in enumerate(store.FIELD_KINDS)}
_READ_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


@dataclass(eq=False)
class CommitRows:
    """One announced commit of one device; ``rows`` once read, (device_id, t micros, time,
    values of ``fields``..., n). ``failed``: the read failed, the stream must resync."""

    device_id: uuid.UUID
    client_id: uuid.UUID
    commit: Commit
    fields: tuple[str, ...] = ()
    rows: Sequence[asyncpg.Record] = ()
    failed: bool = False
    ready: asyncio.Event = field(default_factory=asyncio.Event)


def _weigh(entry: CommitRows) -> int:
    return max(1, entry.commit.rows)


class Follower:
    """One stream's interest: its devices, fields, tenant (None: staff) and queue."""

    def __init__(
        self, device_ids: Iterable[uuid.UUID], fields: Sequence[str], client_id: uuid.UUID | None
    ) -> None:
        self.device_ids = frozenset(device_ids)
        self.fields = tuple(fields)
        self.client_id = client_id
        self.queue: Subscription[CommitRows] = Subscription(
            "telemetry", limits.buffer_limit(), _weigh, resync=True
        )


class TelemetryHub:
    """The per-process engine for StreamTelemetry; :meth:`follow` is all a stream uses."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._by_device: dict[uuid.UUID, set[Follower]] = {}
        self._followers: set[Follower] = set()
        self._pending: list[CommitRows] = []
        self._wake = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._pool: asyncpg.Pool | None = None

    @property
    def listener(self) -> Listener:
        return Listener.shared(self._dsn)

    @property
    def listening(self) -> bool:
        return self.listener.listening

    async def ensure_listening(self) -> None:
        await self.listener.ensure_listening()

    @asynccontextmanager
    async def follow(
        self, device_ids: Iterable[uuid.UUID], fields: Sequence[str], client_id: uuid.UUID | None
    ) -> AsyncIterator[Follower]:
        """Queue the commits of ``device_ids`` (of tenant ``client_id``; None: any) from now
        on (listening before the caller's catch-up read, so nothing committed in between is
        missed) until the block exits. The queue starts with a resync mark."""
        follower = Follower(device_ids, fields, client_id)
        first = not self._followers
        self._followers.add(follower)
        for device_id in follower.device_ids:
            self._by_device.setdefault(device_id, set()).add(follower)
        try:
            if first or self._reader is None or self._reader.done():
                self._reader = asyncio.create_task(self._read_loop())
            async with self.listener.channel(CHANNEL, self._notified, self._gap):
                yield follower
        finally:
            self._followers.discard(follower)
            for device_id in follower.device_ids:
                followers = self._by_device.get(device_id)
                if followers is not None:
                    followers.discard(follower)
                    if not followers:
                        del self._by_device[device_id]
            if not self._followers:
                await self._stop_reader()

    def _gap(self) -> None:
        for follower in self._followers:
            follower.queue.mark_resync()

    def _notified(self, payload: str) -> None:
        try:
            device_id, client_id, commits = decode_notice_of_client(payload)
        except ValueError:
            log.warning("unreadable telemetry notification ignored")
            return
        followers = [
            f
            for f in self._by_device.get(device_id, ())
            if (f.client_id is None or f.client_id == client_id) and not f.queue.overflowed
        ]
        if not followers:
            return
        for commit in commits:
            entry = CommitRows(device_id, client_id, commit)
            self._pending.append(entry)
            for follower in followers:
                follower.queue.add(entry)
        self._wake.set()

    async def _read_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch, self._pending = self._pending[:READ_BATCH], self._pending[READ_BATCH:]
                await self._read(batch)

    async def _read(self, batch: list[CommitRows]) -> None:
        by_client: dict[uuid.UUID, list[CommitRows]] = defaultdict(list)
        for entry in batch:
            by_client[entry.client_id].append(entry)
        try:
            pool = await self._ensure_pool()
            for client_id, entries in by_client.items():
                fields = self._fields_of(entries)
                ranges = [
                    store.CommitRange(e.device_id, e.commit.xid, e.commit.min_us, e.commit.max_us)
                    for e in entries
                ]
                async with pool.acquire() as conn, tenant_transaction(conn, client_id):
                    rows = await store.rows_of_commits(conn, ranges, fields)
                metrics.COMMIT_READS.inc()
                metrics.ROWS_READ.inc(len(rows))
                by_n: dict[int, list[asyncpg.Record]] = defaultdict(list)
                for row in rows:
                    by_n[row[-1]].append(row)
                for n, entry in enumerate(entries, 1):
                    entry.fields, entry.rows = fields, by_n.get(n, [])
                    entry.ready.set()
        except _READ_ERRORS as exc:
            log.warning("reading announced telemetry commits failed; streams resync: %s", exc)
        finally:
            for entry in batch:
                if not entry.ready.is_set():
                    entry.failed = True
                    entry.ready.set()

    def _fields_of(self, entries: list[CommitRows]) -> tuple[str, ...]:
        """Every field a follower of these commits' devices wants, in column order."""
        wanted = {
            name
            for e in entries
            for follower in self._by_device.get(e.device_id, ())
            for name in follower.fields
        }
        return tuple(sorted(wanted, key=_FIELD_ORDER.__getitem__))

    async def _ensure_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            pool = await asyncpg.create_pool(
                self._dsn,
                min_size=0,
                max_size=1,
                server_settings={"application_name": "lifebox-serve-streams"},
            )
            assert pool is not None
            self._pool = pool
        return self._pool

    async def _stop_reader(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        if self._followers:
            return  # a stream came while the reader stopped: it has a new one
        for entry in self._pending:
            entry.failed = True
            entry.ready.set()
        self._pending = []
        pool, self._pool = self._pool, None
        if pool is not None:
            with contextlib.suppress(*_READ_ERRORS):
                await pool.close()
