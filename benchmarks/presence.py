"""The cost of presence on the ingest path, in one run, one table. Asserts nothing.

    .venv/bin/python benchmarks/presence.py [--devices 5000] [--rounds 20]

A fresh migrated PostgreSQL cluster (the test launcher), one tenant with ``--devices``
devices, everything run as the ingest role:

(1) the devices' last-seen update ingest's facts flush makes (one statement for every
    device), with the presence trigger disabled: the baseline, measured in turn with (2)
    and (3)
(2) the same with the trigger, devices without presence (never published a status)
(3) the same with every device online (the trigger reads its row; it writes last_heard_at
    at most every half expected interval)
(4) every device stale: each update revives it (a state change, a history row, a NOTIFY)
(5) applying one status per device in one transaction (first statuses: row, history and
    NOTIFY each), then the same statuses again (redeliveries: no change)
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from datetime import UTC, datetime

import asyncpg

from lifebox_grpc.store import presence
from lifebox_grpc.store.fleet import register_fleet
from lifebox_grpc.store.presence import PresenceEvent
from tests.helpers.services import running_database

_SEEN = (
    "UPDATE devices SET last_seen_at = now() + make_interval(secs => $2) WHERE id = ANY($1::uuid[])"
)


async def _seen_pair(
    owner: asyncpg.Connection,
    conn: asyncpg.Connection,
    ids: list[uuid.UUID],
    rounds: int,
    base: int,
) -> tuple[float, float]:
    """Median milliseconds of one last-seen update of every device without and with the
    presence trigger, the two alternating round by round (so table bloat and the machine's
    load weigh on both alike)."""
    without: list[float] = []
    with_: list[float] = []
    for r in range(rounds):
        for enabled, times in ((False, without), (True, with_)):
            action = "ENABLE" if enabled else "DISABLE"
            await owner.execute(f"ALTER TABLE devices {action} TRIGGER devices_presence_reading")
            started = time.perf_counter()
            await conn.execute(_SEEN, ids, float(base + 2 * r + enabled))
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(without), statistics.median(with_)


async def _apply_s(conn: asyncpg.Connection, events: list[PresenceEvent]) -> tuple[float, int]:
    started = time.perf_counter()
    async with conn.transaction():
        changed = await presence.apply_events(conn, events)
    return time.perf_counter() - started, changed


async def run(owner_dsn: str, ingest_dsn: str, devices: int, rounds: int) -> None:
    owner = await asyncpg.connect(owner_dsn)
    ingest = await asyncpg.connect(ingest_dsn)
    try:
        tag = uuid.uuid4().hex[:8]
        fleet = await register_fleet(
            owner, name=f"bench {tag}", slug=f"b-{tag}", serial_prefix=f"B{tag}-",
            count=devices, status="active",
        )  # fmt: skip
        ids = [d for d, _ in fleet.devices]
        baseline, untracked = await _seen_pair(owner, ingest, ids, rounds, 1)
        now = datetime.now(UTC)
        events = [
            PresenceEvent(fleet.client_id, d, "online", 1, "connect", now, "status") for d in ids
        ]
        first_s, first_changed = await _apply_s(ingest, events)
        again_s, again_changed = await _apply_s(ingest, events)
        online_baseline, online = await _seen_pair(owner, ingest, ids, rounds, 1000)
        await ingest.execute("UPDATE device_presence SET state = 'stale' WHERE client_id = $1",
                             fleet.client_id)  # fmt: skip
        started = time.perf_counter()
        await ingest.execute(_SEEN, ids, 10_000.0)
        revived = (time.perf_counter() - started) * 1000
    finally:
        await ingest.close()
        await owner.close()
    print(f"{devices} devices, median of {rounds} rounds (ms per statement)")
    print(f"(1) last-seen update, trigger disabled (baseline)  {baseline:8.1f} ms")
    print(f"(2) last-seen update, no presence rows             {untracked:8.1f} ms"
          f"  x{untracked / baseline:.2f}")  # fmt: skip
    print(f"(1) baseline again, once every device is online    {online_baseline:8.1f} ms")
    print(f"(3) last-seen update, all online                   {online:8.1f} ms"
          f"  x{online / online_baseline:.2f}")  # fmt: skip
    print(f"(4) last-seen update, all stale (all revived)      {revived:8.1f} ms (one round)")
    print(f"(5) first statuses: {first_changed} changed in {first_s * 1000:.1f} ms"
          f" = {devices / first_s:,.0f}/s; redelivered: {again_changed} changed in"
          f" {again_s * 1000:.1f} ms = {devices / again_s:,.0f}/s")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    with running_database() as db:
        asyncio.run(run(db.owner_dsn, db.ingest_dsn, args.devices, args.rounds))


if __name__ == "__main__":
    main()
