"""The rows a StreamTelemetry call sends, exactly once each, whatever the commit order.

A stream first catches up by reading time (rows after its start time, or after each
device's newest row when it has none, paged), remembering for each read the snapshot it
saw and the time it read after (an *epoch*). From then on it follows the commits the
process's engine announces and reads once for every stream (:mod:`lifebox_grpc.streams.
telemetry`). A commit the first read's snapshot saw is skipped: its rows after the start were
sent by the catch-up, older ones predate the stream. A commit a later epoch saw first had
its rows newer than that epoch's time sent, so only its rows up to that time are taken; a
commit no epoch saw is taken whole (from the start time, if one was given). A commit's rows
are found by device, time range and ``xmin``, so a batch of older readings that commits
after a batch of newer ones is still delivered, once.

When the listener is lost (or not yet back), or the engine could not read a commit, the
stream resynchronises by time: rows newer than the newest it sent, as a fresh epoch. A
reading older than that, committed meanwhile, is then missed; nothing else is. A stream
whose client reads too slowly ends with RESOURCE_EXHAUSTED (:mod:`lifebox_grpc.streams.
subscription`).
"""

from __future__ import annotations

import itertools
import operator
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from lifebox_grpc.store import telemetry as store
from lifebox_grpc.store.telemetry_notices import Commit
from lifebox_grpc.store.xact_snapshots import XactSnapshot
from lifebox_grpc.streams.telemetry import CommitRows, TelemetryHub

# A stream reads at most this many rows per device per read and this many devices per
# catch-up read.
STREAM_ROWS = 1_000
STREAM_DEVICES_PER_READ = 100
# While the fan-out is not listening, streams read by time this often.
STREAM_POLL_SECONDS = 15.0
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_BEFORE_ALL = -(2**63)

Connect = Callable[[], AbstractAsyncContextManager[asyncpg.Connection]]


def micros(when: datetime) -> int:
    """Unix microseconds of ``when``, exactly."""
    return (when - _EPOCH) // timedelta(microseconds=1)


class LiveStream:
    """One stream's state: per device the newest time sent and its catch-up epochs."""

    def __init__(
        self,
        connect: Connect,
        fanout: TelemetryHub,
        device_ids: Sequence[uuid.UUID],
        fields: Sequence[str],
        after_us: dict[uuid.UUID, int],
        start_us: int | None,
        client_id: uuid.UUID | None = None,
    ) -> None:
        """``after_us``: per device, send rows after this time (Unix µs); ``start_us``: never
        send rows older than this (None: rows of later commits, whatever their time);
        ``client_id``: the caller's tenant (None: staff, or not said; the devices were
        checked anyway)."""
        self._client_id = client_id
        self._connect = connect
        self._fanout = fanout
        self._device_ids = list(device_ids)
        self._fields = list(fields)
        self._sent_us = dict(after_us)
        self._start_us = start_us
        self._epochs: dict[uuid.UUID, list[tuple[XactSnapshot, int]]] = {
            d: [] for d in self._device_ids
        }

    async def runs(self) -> AsyncIterator[list[asyncpg.Record]]:
        """Runs of rows of one device, (device_id, t micros, time, fields..., ...), forever."""
        hub = self._fanout
        async with hub.follow(self._device_ids, self._fields, self._client_id) as follower:
            while True:
                update = await follower.queue.wait(None if hub.listening else STREAM_POLL_SECONDS)
                resync = update.resync
                async for run in self._commit_rows(update.items):
                    if run is None:
                        resync = True
                    else:
                        yield run
                if resync:
                    if not hub.listening:
                        await hub.ensure_listening()
                    async for run in self._catch_up():
                        yield run

    def _add_epoch(self, device_id: uuid.UUID, snapshot: XactSnapshot, after_us: int) -> None:
        epochs = self._epochs[device_id]
        if not epochs:
            # What the first read saw predates the stream, or was sent by that read.
            after_us = _BEFORE_ALL
        # A later snapshot sees all an earlier one saw: with the same time, the earlier
        # epoch decides nothing the later one would not.
        if epochs and epochs[-1][1] == after_us:
            epochs.pop()
        epochs.append((snapshot, after_us))

    async def _catch_up(self) -> AsyncIterator[list[asyncpg.Record]]:
        pending = list(self._device_ids)
        while pending:
            more: list[uuid.UUID] = []
            for i in range(0, len(pending), STREAM_DEVICES_PER_READ):
                chunk = pending[i : i + STREAM_DEVICES_PER_READ]
                cursors = [(d, _EPOCH + timedelta(microseconds=self._sent_us[d])) for d in chunk]
                async with self._connect() as conn:
                    read = await store.rows_after(conn, cursors, self._fields, STREAM_ROWS)
                for device_id in chunk:
                    self._add_epoch(device_id, read.snapshot, self._sent_us[device_id])
                for run in runs(read.rows, 0):  # by device
                    device_id = run[0][0]
                    self._sent_us[device_id] = run[-1][1]
                    if len(run) >= STREAM_ROWS:
                        more.append(device_id)
                    yield run
            pending = more

    def _range_of(self, device_id: uuid.UUID, commit: Commit) -> store.CommitRange | None:
        """The part of a commit's rows not sent yet (None: all of them were)."""
        high = commit.max_us
        for snapshot, after_us in self._epochs.get(device_id, ()):
            if snapshot.sees(commit.xid):
                high = min(high, after_us)
                break
        low = commit.min_us if self._start_us is None else max(commit.min_us, self._start_us)
        if low > high:
            return None
        return store.CommitRange(device_id, commit.xid, low, high)

    async def _commit_rows(self, entries: Sequence[CommitRows]) -> AsyncIterator[list[Any] | None]:
        """Each commit's rows not sent yet, per device in arrival order (None once for
        commits the engine could not read: resync). A device's consecutive commits in one
        update go out as one run while their times keep rising: at ingest's pace a commit
        holds a few rows per device, and a message per (commit, device) cost serve more than
        the rows."""
        lost = False
        pending: dict[uuid.UUID, list[list[Any]]] = {}
        for entry in entries:
            if not entry.ready.is_set():
                await entry.ready.wait()
            if entry.failed:
                lost = True
                continue
            wanted = self._range_of(entry.device_id, entry.commit)
            if wanted is None or not entry.rows:
                continue
            rows: Sequence[asyncpg.Record] = entry.rows
            if wanted.min_us > entry.commit.min_us or wanted.max_us < entry.commit.max_us:
                rows = [r for r in rows if wanted.min_us <= r[1] <= wanted.max_us]
                if not rows:
                    continue
            run = list(rows) if entry.fields == tuple(self._fields) else self._project(entry, rows)
            device_runs = pending.setdefault(entry.device_id, [])
            if device_runs and device_runs[-1][-1][1] < run[0][1]:
                device_runs[-1].extend(run)
            else:
                device_runs.append(run)
            self._sent_us[entry.device_id] = max(self._sent_us[entry.device_id], run[-1][1])
        for device_runs in pending.values():
            for run in device_runs:
                yield run
        if lost:
            yield None

    def _project(self, entry: CommitRows, rows: Sequence[asyncpg.Record]) -> list[Any]:
        """Rows as (device_id, t, time, this stream's fields...) when the engine read more
        fields (for other streams) than this one wants."""
        at = [3 + entry.fields.index(name) for name in self._fields]
        return [(r[0], r[1], r[2], *[r[i] for i in at]) for r in rows]


def runs(rows: Sequence[asyncpg.Record], key: int) -> list[list[asyncpg.Record]]:
    """Consecutive rows with the same value at position ``key``."""
    return [list(run) for _, run in itertools.groupby(rows, operator.itemgetter(key))]
