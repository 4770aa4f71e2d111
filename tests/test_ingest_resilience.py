"""Nothing acknowledged is lost: worker crashes and database outages mid-stream."""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time

import asyncpg
import pytest

from lifebox_grpc.runtime.mosquitto import EmbeddedMosquitto
from lifebox_grpc.store.pool import tenant_transaction
from tests.helpers.ingest import IngestProcess, publisher, register_fleet
from tests.helpers.services import Database, running_database
from tests.helpers.wait import async_wait_until

pytestmark = pytest.mark.timeout(300)


def sequenced(serials: list[str], total: int, base_ms: int) -> list[tuple[str, bytes]]:
    """`total` readings, one per message, spread over the devices, each with its own ts."""
    return [
        (
            f"lifebox/v1/{serials[i % len(serials)]}/telemetry",
            json.dumps({"ts": base_ms + i, "packet_seq": i, "voltage_l1": 230.0}).encode(),
        )
        for i in range(total)
    ]


async def count_rows(dsn: str, client_id: object) -> tuple[int, int]:
    """(rows, distinct packet_seq) of a tenant."""
    conn = await asyncpg.connect(dsn)
    try:
        async with tenant_transaction(conn, None, staff=True):
            row = await conn.fetchrow(
                "SELECT count(*), count(DISTINCT packet_seq) FROM telemetry_events "
                "WHERE client_id = $1",
                client_id,
            )
            return int(row[0]), int(row[1])
    finally:
        await conn.close()


async def test_sigkilled_worker_loses_and_duplicates_nothing(
    database: Database, broker: EmbeddedMosquitto
) -> None:
    total = 20_000
    fleet = await register_fleet(database.owner_dsn, 20)
    messages = sequenced([s for _, s in fleet.devices], total, int(time.time() * 1000) - 600_000)
    worker = IngestProcess(database, broker.url)
    worker.start()
    rng = random.Random(7)
    try:
        with publisher(broker.port) as pub:
            sender = threading.Thread(target=pub.publish_all, args=(messages, 240))
            sender.start()
            for _ in range(3):
                # Kill at a random moment while rows are flowing, then restart the same session.
                target = (
                    rng.randint(1000, total // 4)
                    + (await count_rows(database.owner_dsn, fleet.client_id))[0]
                )
                await async_wait_until(
                    lambda t=target: _at_least(database.owner_dsn, fleet.client_id, min(t, total)),
                    120,
                    "progress before kill",
                )
                worker.kill()
                worker.start()
            sender.join(240)
            assert not sender.is_alive()

            async def done() -> bool:
                rows, _ = await count_rows(database.owner_dsn, fleet.client_id)
                return rows >= total

            await async_wait_until(done, 120, f"{total} rows")
        rows, distinct = await count_rows(database.owner_dsn, fleet.client_id)
        assert rows == total
        assert distinct == total
    finally:
        worker.stop()
        worker.forget_session(broker.port)


async def _at_least(dsn: str, client_id: object, target: int) -> bool:
    rows, _ = await count_rows(dsn, client_id)
    return rows >= target


async def test_database_outage_loses_nothing_and_worker_recovers(
    broker: EmbeddedMosquitto,
) -> None:
    total = 6_000
    with running_database() as db:
        fleet = await register_fleet(db.owner_dsn, 10)
        messages = sequenced([s for _, s in fleet.devices], total, int(time.time() * 1000) - 60_000)
        worker = IngestProcess(db, broker.url)
        worker.start()
        try:
            with publisher(broker.port) as pub:
                pub.publish_all(messages[: total // 3])
                await async_wait_until(
                    lambda: _at_least(db.owner_dsn, fleet.client_id, 1), 60, "first rows"
                )
                db.server.stop()
                outage_started = time.monotonic()
                # Devices keep publishing while the database is down; the broker holds it all.
                await asyncio.to_thread(pub.publish_all, messages[total // 3 :])
                await asyncio.sleep(max(0.0, 10 - (time.monotonic() - outage_started)))
                db.server.start()
                await async_wait_until(
                    lambda: _at_least(db.owner_dsn, fleet.client_id, total), 120, "all rows"
                )
            rows, distinct = await count_rows(db.owner_dsn, fleet.client_id)
            assert (rows, distinct) == (total, total)
            assert worker.proc is not None
            assert worker.proc.poll() is None
        finally:
            worker.stop()
            worker.forget_session(broker.port)
