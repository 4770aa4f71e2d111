"""Unknown keys of committed batches: each client's totals, and which devices sent which.

The decoder counts unknown keys per device; :func:`client_totals` sums them up per client for
the client's catalogue (``unknown_field_catalog``, written with the other post-commit facts).
ListUnknownFields shows operators and viewers only the keys their assigned devices sent, so
ingest records each (device, key) pair it sees with that device's first value
(``unknown_field_devices``). A pair is written once and never updated: this worker
remembers the pairs it has written (up to :data:`MAX_REMEMBERED`, then it starts over), so a
fleet that sends the same keys all day costs a set lookup per device and key and batch, and
no write. A pair another worker wrote, or one forgotten, is skipped by the database.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import asyncpg

from lifebox_grpc.native import UnknownField
from lifebox_grpc.store import unknown_fields as store
from lifebox_grpc.store.unknown_fields import DeviceField

# Pairs remembered as written (a pair is about 200 bytes here), and pairs waiting at most.
MAX_REMEMBERED = 200_000
MAX_PENDING = 100_000


def client_totals(
    unknown: Iterable[UnknownField],
) -> list[tuple[uuid.UUID, str, str, int, str]]:
    """(client, name, JSON type, count, example) per client and key of one batch: counts
    summed over devices, the type 'mixed' where devices' types differ, the first example."""
    totals: dict[tuple[uuid.UUID, str], list[Any]] = {}
    for field in unknown:
        known = totals.get((field.client_id, field.name))
        if known is None:
            totals[(field.client_id, field.name)] = [field.json_type, field.count, field.example]
            continue
        known[1] += field.count
        if known[0] != field.json_type:
            known[0] = "mixed"
    return [(c, name, t, n, example) for (c, name), (t, n, example) in totals.items()]


class FieldDevices:
    """Pairs of a worker's committed batches not yet written, and those already written."""

    def __init__(self, max_remembered: int = MAX_REMEMBERED) -> None:
        self._max_remembered = max_remembered
        self._written: set[tuple[uuid.UUID, str]] = set()
        self._pending: dict[tuple[uuid.UUID, str], DeviceField] = {}

    @property
    def pending(self) -> bool:
        return bool(self._pending)

    def note(self, unknown: Iterable[UnknownField], seen_at: datetime) -> None:
        """Keep the pairs of one committed batch that are not written yet. Past
        :data:`MAX_PENDING` (the database has been failing), new pairs wait for the next time
        their device sends the key."""
        pending, written = self._pending, self._written
        for field in unknown:
            key = (field.device_id, field.name)
            if key in written or key in pending or len(pending) >= MAX_PENDING:
                continue
            pending[key] = DeviceField(
                field.client_id, field.device_id, field.name, field.json_type, field.example,
                seen_at,
            )  # fmt: skip

    async def flush(self, conn: asyncpg.Connection) -> None:
        """Write the pending pairs. On an error they are dropped (and the error raised): they
        are noted again the next time their devices send the keys, and a pair that can never
        be written (its device deleted meanwhile) cannot block the facts written after it."""
        if not self._pending:
            return
        taken, self._pending = self._pending, {}
        # Sorted, so that workers inserting the same keys lock them in one order.
        await store.record_device_fields(conn, [taken[key] for key in sorted(taken, key=str)])
        if len(self._written) + len(taken) > self._max_remembered:
            self._written.clear()
        self._written.update(taken)
