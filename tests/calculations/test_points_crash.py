"""A SIGKILLed worker loses and doubles no calculated point: points commit with their
readings, and the redelivered batches deduplicate both."""

from __future__ import annotations

import random
import threading
import time

import asyncpg
import pytest

from lifebox_grpc.runtime.mosquitto import EmbeddedMosquitto
from lifebox_grpc.store.pool import tenant_transaction
from tests.calculations.test_ingest_points import make_formula
from tests.helpers.ingest import IngestProcess, publisher, register_fleet
from tests.helpers.services import Database
from tests.helpers.wait import async_wait_until
from tests.test_ingest_resilience import count_rows, sequenced

pytestmark = pytest.mark.timeout(300)


async def count_points(conn: asyncpg.Connection, client_id: object) -> tuple[int, int]:
    """(points, distinct (device, metric, time)) of a tenant."""
    async with tenant_transaction(conn, None, staff=True):
        row = await conn.fetchrow(
            "SELECT count(*), count(DISTINCT (device_id, metric, time)) FROM device_data_points "
            "WHERE client_id = $1",
            client_id,
        )
    assert row is not None
    return int(row[0]), int(row[1])


async def test_sigkilled_worker_loses_and_doubles_no_point(
    database: Database, broker: EmbeddedMosquitto, owner_conn: asyncpg.Connection
) -> None:
    total = 8_000
    fleet = await register_fleet(database.owner_dsn, 10)
    await make_formula(owner_conn, fleet.client_id, "kv", "voltage_l1 / 1000", unit="kV")
    await make_formula(owner_conn, fleet.client_id, "seq_half", "packet_seq / 2")
    messages = sequenced([s for _, s in fleet.devices], total, int(time.time() * 1000) - 600_000)
    worker = IngestProcess(database, broker.url)
    worker.start()
    rng = random.Random(11)

    async def at_least(target: int) -> bool:
        return (await count_rows(database.owner_dsn, fleet.client_id))[0] >= target

    try:
        with publisher(broker.port) as pub:
            sender = threading.Thread(target=pub.publish_all, args=(messages, 240))
            sender.start()
            for _ in range(2):
                rows, _ = await count_rows(database.owner_dsn, fleet.client_id)
                target = min(rows + rng.randint(500, total // 4), total)
                await async_wait_until(lambda t=target: at_least(t), 120, "progress before kill")
                worker.kill()
                worker.start()
            sender.join(240)
            assert not sender.is_alive()
            await async_wait_until(lambda: at_least(total), 120, f"{total} rows")
    finally:
        worker.stop()
        worker.forget_session(broker.port)
    assert await count_rows(database.owner_dsn, fleet.client_id) == (total, total)
    assert await count_points(owner_conn, fleet.client_id) == (2 * total, 2 * total)
