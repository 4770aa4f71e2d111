"""Stored rejects of messages that name no tenant's device, capped per worker and interval.

A message whose topic names no device (a malformed or unknown serial, a topic that isn't
ours) has no tenant to charge, and whoever can publish can send as many as the broker carries.
Each worker stores at most ``per_interval`` of them one by one per interval (intervals aligned
to the wall clock). Every one past that is still counted (``lifebox_ingest_rejects_total``,
``lifebox_ingest_rejects_not_stored_total``) and logged at the reject log's rate, and the
interval's counts by reason land in one stored ``suppressed_rejects`` row once the interval
ends (or the worker stops): counted and visible, never silent. A tally the database did not
take is kept and written with the next one; one a crash takes with it is lost with the
process's metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

import asyncpg

from lifebox_grpc import metrics
from lifebox_grpc.store import ingest as store
from lifebox_grpc.store.ingest import RejectRow

log = logging.getLogger(__name__)

# Reject codes of messages that name no device of any tenant.
CAPPED = frozenset({"unknown_topic", "invalid_serial", "unknown_device"})
SUMMARY_CODE = "suppressed_rejects"


class RejectCap:
    """Decides which unattributed rejects are stored one by one, tallies the rest, and
    writes one summary row per interval that had any."""

    def __init__(
        self,
        per_interval: int,
        interval_s: float,
        worker: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.per_interval = per_interval
        self.interval_s = interval_s
        self.worker = worker
        self._clock = clock
        self._window = -1
        self._admitted = 0
        # interval index → rejects of committed batches not stored one by one, by reason
        self._tallies: dict[int, Counter[str]] = {}

    def _index(self, now: float) -> int:
        return int(now // self.interval_s)

    def admit(self, code: str) -> bool:
        """Whether a reject with this code is stored one by one (it uses up the interval's
        allowance when it is one of :data:`CAPPED`)."""
        if code not in CAPPED:
            return True
        window = self._index(self._clock())
        if window != self._window:
            self._window, self._admitted = window, 0
        if self._admitted >= self.per_interval:
            return False
        self._admitted += 1
        return True

    def tally(self, counts: Mapping[str, int]) -> None:
        """Rejects of a committed batch that were not stored, by reason."""
        if not counts:
            return
        self._tallies.setdefault(self._index(self._clock()), Counter()).update(counts)
        for code, count in counts.items():
            metrics.INGEST_REJECTS_NOT_STORED.labels(code).inc(count)

    @property
    def pending(self) -> int:
        return sum(sum(c.values()) for c in self._tallies.values())

    def take_due(self, final: bool = False) -> list[RejectRow]:
        """Summary rows of the intervals that have ended (``final``: of every interval, the
        current one cut at now), removed from the tallies."""
        now = self._clock()
        current = self._index(now)
        due = sorted(w for w in self._tallies if final or w < current)
        return [self._summary(w, self._tallies.pop(w), now) for w in due]

    def _summary(self, window: int, counts: Counter[str], now: float) -> RejectRow:
        start = window * self.interval_s
        end = min(start + self.interval_s, now)
        total = sum(counts.values())
        by_reason = ", ".join(f"{code} {n}" for code, n in sorted(counts.items()))
        start_at = datetime.fromtimestamp(start, UTC)
        end_at = datetime.fromtimestamp(end, UTC)
        body = {
            "worker": self.worker,
            "window_start": start_at.isoformat(),
            "window_end": end_at.isoformat(),
            "cap": self.per_interval,
            "interval_s": self.interval_s,
            "not_stored": dict(sorted(counts.items())),
        }
        return RejectRow(
            client_id=None,
            serial="",
            topic="",
            received_at=start_at,
            code=SUMMARY_CODE,
            reason=(
                f"{total} rejects of messages naming no device ({by_reason}) between "
                f"{start_at:%H:%M:%S} and {end_at:%H:%M:%S} UTC were counted but not stored "
                f"one by one: past worker {self.worker}'s cap of {self.per_interval} per "
                f"{self.interval_s:g} s"
            ),
            raw=json.dumps(body).encode(),
            raw_truncated=False,
            reading_index=None,
        )

    def _restore(self, rows: list[RejectRow]) -> None:
        for row in rows:
            body = json.loads(row.raw)
            window = self._index(row.received_at.timestamp())
            self._tallies.setdefault(window, Counter()).update(body["not_stored"])

    async def flush(
        self, pool: asyncpg.Pool, errors: tuple[type[BaseException], ...], final: bool = False
    ) -> None:
        rows = self.take_due(final)
        if not rows:
            return
        try:
            async with pool.acquire() as conn:
                await store.insert_rejects(conn, rows)
        except errors as exc:
            counts = {r.received_at.isoformat(): json.loads(r.raw)["not_stored"] for r in rows}
            if final:
                log.error(
                    "summary of rejects not stored could not be written",
                    extra={"error": type(exc).__name__, "not_stored": counts},
                )
                return
            log.warning(
                "summary of rejects not stored not written; retrying with the next",
                extra={"error": type(exc).__name__, "not_stored": counts},
            )
            self._restore(rows)

    async def run(
        self, pool: asyncpg.Pool, errors: tuple[type[BaseException], ...], stop: asyncio.Event
    ) -> None:
        """Write each interval's summary once it has ended, until `stop`; then the rest."""
        while not stop.is_set():
            now = self._clock()
            wait = (self._index(now) + 1) * self.interval_s - now
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(wait, 0.01))
            await self.flush(pool, errors)
        await self.flush(pool, errors, final=True)
