"""The broker must not lose what it acknowledged (issue 20): readings the embedded mosquitto
accepted for ingest's offline session survive a `kill -9` of the broker once one autosave
interval has passed, and are committed when ingest comes back. With the former setting (a
save every 30 s) none of them did."""

from __future__ import annotations

import asyncio
import json
import time

import asyncpg

from lifebox_grpc.runtime.mosquitto import AUTOSAVE_INTERVAL_S
from lifebox_grpc.store.pool import tenant_transaction
from tests.helpers.ingest import IngestProcess, publisher, register_fleet
from tests.helpers.services import Database, running_broker
from tests.helpers.wait import async_wait_until

READINGS = 10_000


async def test_acknowledged_readings_survive_a_broker_kill_9_after_one_autosave(
    session_database: Database, owner_conn: asyncpg.Connection
) -> None:
    database = session_database
    fleet = await register_fleet(database.owner_dsn, 20)
    base_ms = int(time.time() * 1000) - 3_600_000
    messages = [
        (
            f"lifebox/v1/{fleet.devices[i % 20][1]}/telemetry",
            json.dumps({"ts": base_ms + i, "voltage_l1": 230.0}).encode(),
        )
        for i in range(READINGS)
    ]
    with running_broker() as broker:
        worker = IngestProcess(database, broker.url)
        worker.start()  # makes its persistent session and subscriptions, then goes away
        worker.stop()
        with publisher(broker.port) as pub:
            pub.publish_all(messages)  # every one PUBACKed: the broker holds them for ingest
        await asyncio.sleep(AUTOSAVE_INTERVAL_S * 2 + 0.5)
        broker.kill()
        broker.start()
        back = IngestProcess(database, broker.url, client_id=worker.client_id)
        back.start()
        try:

            async def committed() -> bool:
                async with tenant_transaction(owner_conn, fleet.client_id):
                    count = await owner_conn.fetchval(
                        "SELECT count(*) FROM telemetry_events WHERE client_id = $1",
                        fleet.client_id,
                    )
                return int(count) == READINGS

            await async_wait_until(committed, timeout=60, what="every reading committed")
        finally:
            back.stop()
            back.forget_session(broker.port)
