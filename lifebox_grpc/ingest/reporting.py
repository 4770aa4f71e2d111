"""What a worker reports besides its rows: reject log lines (rate limited) and the sliding
window of committed rows/s and latency exported as gauges."""

from __future__ import annotations

import logging
import time
from array import array
from collections import defaultdict, deque

from lifebox_grpc import metrics
from lifebox_grpc.store.ingest import RejectRow

log = logging.getLogger(__name__)
LATENCY_SAMPLES_PER_BATCH = 32


class RateLimitedLog:
    """At most one reject log line per reason code per interval, with the count skipped."""

    def __init__(self, interval_s: float = 10.0) -> None:
        self.interval_s = interval_s
        self._last: dict[str, float] = {}
        self._skipped: dict[str, int] = defaultdict(int)

    def reject(self, row: RejectRow) -> None:
        now = time.monotonic()
        if now - self._last.get(row.code, 0.0) < self.interval_s:
            self._skipped[row.code] += 1
            return
        self._last[row.code] = now
        # Serial, topic and reason only: payloads may carry secrets and are stored, not logged.
        log.warning(
            "reading rejected",
            extra={
                "code": row.code,
                "reason": row.reason[:200],
                "serial": row.serial,
                "suppressed": self._skipped.pop(row.code, 0),
            },
        )


class WindowStats:
    """Committed rows/s and publish-to-commit latency percentiles over a sliding window,
    exported as gauges (at most once a second) so load tests can read them from /metrics."""

    def __init__(self, window_s: float = 10.0) -> None:
        self.window_s = window_s
        self._rows: deque[tuple[float, int]] = deque()
        self._latencies: deque[tuple[float, float]] = deque()
        self._published = 0.0

    def observe(self, rows: int, row_times_us: bytes, committed_us: int) -> None:
        now = time.monotonic()
        self._rows.append((now, rows))
        times = array("q")
        times.frombytes(row_times_us)
        step = max(1, len(times) // LATENCY_SAMPLES_PER_BATCH)
        for ts in times[::step]:
            latency = max(0.0, (committed_us - ts) / 1_000_000)
            self._latencies.append((now, latency))
            metrics.INGEST_LATENCY.observe(latency)
        if now - self._published >= 1.0:
            self._publish(now)

    def _publish(self, now: float) -> None:
        self._published = now
        cutoff = now - self.window_s
        while self._rows and self._rows[0][0] < cutoff:
            self._rows.popleft()
        while self._latencies and self._latencies[0][0] < cutoff:
            self._latencies.popleft()
        span = now - self._rows[0][0] if len(self._rows) > 1 else self.window_s
        metrics.INGEST_ROWS_PER_SECOND.set(sum(r for _, r in self._rows) / max(span, 1e-3))
        ordered = sorted(x for _, x in self._latencies)
        if ordered:
            metrics.INGEST_LATENCY_P50.set(ordered[len(ordered) // 2])
            metrics.INGEST_LATENCY_P99.set(ordered[min(len(ordered) - 1, len(ordered) * 99 // 100)])
