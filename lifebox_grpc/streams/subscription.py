"""One stream's bounded queue of what its hub routed to it, in arrival order.

Items are weighed (a telemetry commit by its rows, a notice as one); a subscription holds at
most ``limit`` of that weight. Past it the stream ends with RESOURCE_EXHAUSTED rather than
resynchronise by time: a resync by time silently misses readings committed late with older
times (so "exactly once" would quietly stop holding), and a client that cannot keep up with
live data would keep the server re-reading for it. Ending says plainly that the client fell
behind; it resumes with ``start_time`` just after the newest item it received (every stream
can catch up from a time), and the other streams never wait for it. Overflows are counted
(``lifebox_stream_overflows_total{stream}``).

A resync mark (the listener was lost, or a stream is new) splits the queue: items queued
before it are handed out first, then the stream reads by time, then the items after it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from lifebox_grpc.errors import ResourceExhausted
from lifebox_grpc.streams import metrics

T = TypeVar("T")


@dataclass(frozen=True)
class Update(Generic[T]):
    """``items`` to handle in order; then, if ``resync``, read by time what may be lost."""

    items: list[T]
    resync: bool

    @property
    def notices(self) -> list[T]:
        """The items, by the name notice streams use for them."""
        return self.items


class StreamOverflow(ResourceExhausted):
    """The client read slower than its stream produced: its buffer was full."""

    def __init__(self, stream: str, limit: int) -> None:
        super().__init__(
            f"this stream's client fell more than {limit} items behind and the stream was "
            "ended; open it again with start_time just after the newest item received",
            retry_after=0.0,
            subject=f"stream:{stream}:buffer",
            reason="ERROR_REASON_RATE_LIMITED",
        )


class Subscription(Generic[T]):
    """What one stream has not taken yet. Hubs call :meth:`add` and :meth:`mark_resync`;
    the stream calls :meth:`wait`."""

    def __init__(
        self,
        stream: str,
        limit: int,
        weigh: Callable[[T], int] = lambda _item: 1,
        *,
        resync: bool = False,
    ) -> None:
        """``stream`` names the kind (for the metric and the error); ``resync``: start with
        a resync mark (the stream's first step is its catch-up)."""
        self.stream = stream
        self.limit = limit
        self._weigh = weigh
        self._items: list[T] = []
        self._before_resync: list[T] = []
        self._held = 0
        self._resync = resync
        self.overflowed = False
        self._event = asyncio.Event()
        if resync:
            self._event.set()

    @property
    def held(self) -> int:
        """The weight queued now."""
        return self._held

    def add(self, item: T) -> None:
        if self.overflowed:
            return
        self._held += self._weigh(item)
        if self._held > self.limit:
            # Drop everything at once: the memory goes back now, not when the client reads.
            self.overflowed = True
            self._items, self._before_resync, self._held = [], [], 0
            metrics.STREAM_OVERFLOWS.labels(self.stream).inc()
        else:
            self._items.append(item)
        self._event.set()

    def mark_resync(self) -> None:
        self._before_resync.extend(self._items)
        self._items = []
        self._resync = True
        self._event.set()

    async def wait(self, timeout: float | None) -> Update[T]:
        """The next update; after ``timeout`` seconds without one, a resync (a poll).
        Raises :class:`StreamOverflow` once the buffer overflowed."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            self.mark_resync()
        if self.overflowed:
            raise StreamOverflow(self.stream, self.limit)
        if self._resync:
            update = Update(self._before_resync, True)
            self._before_resync, self._resync = [], False
            if not self._items:
                self._event.clear()
        else:
            update = Update(self._items, False)
            self._items = []
            self._event.clear()
        self._held -= sum(self._weigh(item) for item in update.items)
        return update
