"""Where a load generator run's readings went: committed, rejected, dropped by the broker.

Every reading the load generator publishes is stamped at publish time, so the run's readings
are its devices' rows from its start on. After the publisher stops, ingest may still be
working through the broker's queue: :func:`settle` waits until every reading is accounted
for, or until nothing has changed for ``quiet_s`` (then what is missing is "unaccounted").
The broker's drops are its ``$SYS`` count (:mod:`lifebox_grpc.broker.drops`), read before and
after; they are the broker's, for all its clients, so the figure is exact only while this run
is the broker's only overload.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from lifebox_grpc.broker.drops import BrokerDrops
from lifebox_grpc.store.pool import tenant_transaction

_COMMITTED = """
SELECT count(*) FROM telemetry_events
WHERE device_id = ANY(SELECT id FROM devices WHERE serial = ANY($1::text[])) AND time >= $2
"""
_REJECTED = """
SELECT count(*) FROM ingest_rejects WHERE serial = ANY($1::text[]) AND received_at >= $2
"""


@dataclass(frozen=True)
class Accounting:
    """A run's readings by fate. ``dropped`` is None where the broker publishes no count."""

    sent: int
    committed: int
    rejected: int
    dropped: int | None
    # first publish -> the last time the committed count grew (to within the poll interval)
    ingest_seconds: float

    @property
    def unaccounted(self) -> int:
        return self.sent - self.committed - self.rejected - (self.dropped or 0)

    @property
    def sustained_per_s(self) -> float:
        return self.committed / self.ingest_seconds if self.ingest_seconds > 0 else 0.0

    def lines(self) -> list[str]:
        dropped = "unknown (the broker publishes no drop count)"
        if self.dropped is not None:
            dropped = f"{self.dropped:,}"
        out = [
            f"readings: sent {self.sent:,}, committed {self.committed:,}, rejected "
            f"{self.rejected:,}, dropped by the broker {dropped}, unaccounted {self.unaccounted:,}",
            f"ingest sustained {self.sustained_per_s:,.0f} readings/s "
            f"(first publish -> last commit, {self.ingest_seconds:.1f} s)",
        ]
        if self.dropped:
            out.append(
                "warning: the broker acknowledged readings it then dropped, because ingest did "
                "not take them in time (README: Overload)"
            )
        return out


class RunLedger:
    """What the broker had dropped before the run; counts the run's readings afterwards."""

    def __init__(self, dsn: str, mqtt_url: str, serials: Sequence[str], sys_wait_s: float):
        self._dsn = dsn
        self._serials = list(serials)
        self._drops = BrokerDrops(mqtt_url, "lifebox-loadgen-drops").start()
        self._sys_wait_s = sys_wait_s
        self._baseline = self._drops.wait_first(sys_wait_s)
        self.started = datetime.now().astimezone()
        self._t0 = time.monotonic()

    def close(self) -> None:
        self._drops.stop()

    def _dropped_messages(self) -> int | None:
        if self._baseline is None:
            return None
        value = self._drops.value
        return None if value is None else value - self._baseline

    async def settle(
        self,
        sent_readings: int,
        per_message: int,
        quiet_s: float = 10.0,
        progress: Callable[[str], None] | None = None,
    ) -> Accounting:
        """Poll until sent = committed + rejected + dropped, or nothing moved for quiet_s."""
        conn = await asyncpg.connect(self._dsn)
        try:
            state: tuple[int, int, int | None] = (-1, -1, None)
            last_change = last_growth = time.monotonic()
            while True:
                # Across tenants (the serials may be anyone's): the staff path of RLS.
                async with tenant_transaction(conn, None, staff=True):
                    committed = int(await conn.fetchval(_COMMITTED, self._serials, self.started))
                    rejected = int(await conn.fetchval(_REJECTED, self._serials, self.started))
                messages = self._dropped_messages()
                dropped = None if messages is None else messages * per_message
                now = time.monotonic()
                if committed > state[0]:
                    last_growth = now
                if (committed, rejected, dropped) != state:
                    last_change = now
                state = (committed, rejected, dropped)
                if progress:
                    progress(f"\rsettling: {committed:>10,} committed  {dropped or 0:>10,} dropped")
                # Drops arrive every sys_interval, so "quiet" must outlast a few of them.
                if committed + rejected + (dropped or 0) >= sent_readings:
                    break
                if now - last_change >= max(quiet_s, 3 * self._sys_wait_s):
                    break
                await asyncio.sleep(0.5)
        finally:
            await conn.close()
        if progress:
            progress("\n")
        return Accounting(sent_readings, state[0], state[1], state[2], last_growth - self._t0)
