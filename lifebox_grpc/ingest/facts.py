"""Facts derived from committed batches: the unknown-field catalogue and devices' last seen.

They are merged across batches and written at most every ``interval`` seconds, in one
statement: per batch they cost PostgreSQL more than the rows themselves (one device update
per device and batch). Readings are committed and acknowledged before any of this. Facts a
failed write did not record are kept and written with the next flush (up to
:data:`MAX_RETAINED_FACTS`, then dropped with an error log); a fact lost to a crash is
refreshed by the device's next reading (last seen, catalogue count and type), so it is
recoverable. The NOTIFY that live streams follow is NOT deferred: it is sent inside the
batch's own transaction (:func:`lifebox_grpc.store.ingest.announce_commit`, issue 18), so a
crash after COMMIT cannot lose it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from array import array
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from lifebox_grpc.ingest.unknown_fields import FieldDevices, client_totals
from lifebox_grpc.native import DecodedBatch
from lifebox_grpc.store import ingest as store
from lifebox_grpc.store.ingest import CatalogRow

log = logging.getLogger(__name__)

# Facts (catalogue rows + devices) kept for a retry after failed writes; past this, dropped.
MAX_RETAINED_FACTS = 100_000


@dataclass
class _Facts:
    """Merged facts not yet written, oldest first."""

    catalog: dict[tuple[uuid.UUID, str], CatalogRow] = field(default_factory=dict)
    latest_us: dict[uuid.UUID, int] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return len(self.catalog) + len(self.latest_us)

    def add_catalog(self, row: CatalogRow) -> None:
        key = (row.client_id, row.name)
        known = self.catalog.get(key)
        if known is None:
            self.catalog[key] = row
            return
        json_type = known.json_type if known.json_type == row.json_type else "mixed"
        self.catalog[key] = CatalogRow(
            known.client_id, known.name, json_type, known.count + row.count, known.example,
            max(known.seen_at, row.seen_at),
        )  # fmt: skip

    def add_latest(self, device: uuid.UUID, us: int) -> None:
        if us > self.latest_us.get(device, -(2**63)):
            self.latest_us[device] = us

    def absorb(self, newer: _Facts) -> None:
        """Merge facts gathered after these."""
        for row in newer.catalog.values():
            self.add_catalog(row)
        for device, us in newer.latest_us.items():
            self.add_latest(device, us)


def device_spans(
    decoded: DecodedBatch, device_clients: list[tuple[uuid.UUID, uuid.UUID]]
) -> dict[uuid.UUID, tuple[uuid.UUID, int, int, int]]:
    """Per device of a batch: (client, oldest µs, newest µs, rows) of the rows it inserts,
    what the batch's commit announcement says (:func:`store.announce_commit`).
    `device_clients` is (device, client) per input message."""
    times = array("q")
    times.frombytes(decoded.row_times_us)
    spans: dict[uuid.UUID, tuple[uuid.UUID, int, int, int]] = {}
    first = 0
    for (device, client), count in zip(device_clients, decoded.rows_per_message, strict=True):
        if not count:
            continue
        run = times[first : first + count]
        first += count
        lo, hi, rows = min(run), max(run), count
        if device in spans:
            _, known_lo, known_hi, known_rows = spans[device]
            lo, hi, rows = min(lo, known_lo), max(hi, known_hi), rows + known_rows
        spans[device] = (client, lo, hi, rows)
    return spans


class BatchFacts:
    """Accumulates facts of committed batches; `run` writes them out periodically."""

    def __init__(
        self, pool: asyncpg.Pool, interval: float, errors: tuple[type[BaseException], ...]
    ):
        self.pool = pool
        self.interval = interval
        self.errors = errors
        self._facts = _Facts()
        self.field_devices = FieldDevices()

    def add(
        self,
        decoded: DecodedBatch,
        device_clients: list[tuple[uuid.UUID, uuid.UUID]],
        committed_at: datetime,
    ) -> None:
        """Merge one committed batch. `device_clients` is (device, client) per input message."""
        facts = self._facts
        self.field_devices.note(decoded.unknown_fields, committed_at)
        for client, name, json_type, count, example in client_totals(decoded.unknown_fields):
            facts.add_catalog(CatalogRow(client, name, json_type, count, example, committed_at))
        for device, us in decoded.latest_us.items():
            facts.add_latest(device, us)

    @property
    def pending(self) -> bool:
        return bool(self._facts.latest_us or self._facts.catalog)

    async def flush(self) -> None:
        if not self.pending:
            return
        facts, self._facts = self._facts, _Facts()
        # Sorted, so that workers updating the same rows lock them in one order (no deadlock).
        catalog = [facts.catalog[key] for key in sorted(facts.catalog, key=str)]
        latest_us = dict(sorted(facts.latest_us.items()))
        try:
            async with self.pool.acquire() as conn:
                # First: a failure here leaves every fact of this flush to retry.
                await self.field_devices.flush(conn)
                await store.record_batch_facts(conn, catalog, latest_us)
        except self.errors as exc:
            facts.absorb(self._facts)
            if facts.count > MAX_RETAINED_FACTS:
                log.error(
                    "post-commit facts not recorded and dropped",
                    extra={"error": type(exc).__name__, "facts": facts.count},
                )
                return
            log.warning(
                "post-commit facts not recorded; retrying with the next flush",
                extra={"error": type(exc).__name__, "facts": facts.count},
            )
            self._facts = facts

    async def run(self, stop: asyncio.Event) -> None:
        """Write merged facts every `interval` seconds until `stop`, then a last time."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)
            await self.flush()
        await self.flush()
