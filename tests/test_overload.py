"""Overload (issue 18): what the broker drops is counted, and the load generator's report
accounts for every reading it sent, exactly.

The broker here queues at most 1 MiB per session, so the load generator at full speed is
sure to outrun ingest on any machine; the figures must add up all the same.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg

from lifebox_grpc.broker.drops import BrokerDrops
from lifebox_grpc.store.pool import tenant_transaction
from tests.helpers.broker import running_broker_sync
from tests.helpers.ingest import running_ingest
from tests.helpers.services import Database, running_broker
from tests.helpers.wait import wait_until

REPORT = re.compile(
    r"readings: sent ([\d,]+), committed ([\d,]+), rejected ([\d,]+), "
    r"dropped by the broker ([\d,]+), unaccounted (-?[\d,]+)"
)


def _number(text: str) -> int:
    return int(text.replace(",", ""))


async def test_overload_every_sent_reading_is_committed_rejected_or_counted_as_dropped(
    session_database: Database, owner_conn: asyncpg.Connection, tmp_path: Path
) -> None:
    database = session_database
    prefix = f"OV{uuid.uuid4().hex[:6]}-"
    log = tmp_path / "ingest.log"
    with (
        running_broker(max_queued_bytes=1024 * 1024) as broker,
        running_broker_sync(database.broker_sync_dsn, broker),
        running_ingest(database, broker.url, broker.port, log_path=log) as worker,
    ):
        env = {
            **os.environ,
            "LIFEBOX_DATABASE_URL": database.app_dsn,
            "LIFEBOX_OWNER_DATABASE_URL": database.owner_dsn,
            "LIFEBOX_INGEST_DATABASE_URL": database.ingest_dsn,
            "LIFEBOX_MQTT_URL": broker.url,
        }
        command = [sys.executable, "-m", "lifebox_grpc.cli", "loadgen", "--register"]
        args = ["--devices", "50", "--duration", "10", "--serial-prefix", prefix]
        result = await asyncio.to_thread(
            subprocess.run,
            command + args,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        found = REPORT.search(result.stdout)
        assert found, result.stdout
        sent, committed, rejected, dropped, unaccounted = map(_number, found.groups())
        # The broker's own count, read independently of the load generator.
        drops = BrokerDrops(broker.url).start()
        try:
            broker_total = await asyncio.to_thread(drops.wait_first, 10)
        finally:
            drops.stop()
        # Each worker reads the count every second: give it a few.
        exported = wait_until(
            lambda: worker.metric("lifebox_broker_dropped_messages") == broker_total,
            timeout=10,
            what="ingest to export the broker's drop count",
        ) and worker.metric("lifebox_broker_dropped_messages")

    async with tenant_transaction(owner_conn, None, staff=True):
        in_table = await owner_conn.fetchval(
            "SELECT count(*) FROM telemetry_events t JOIN devices d ON d.id = t.device_id "
            "WHERE d.serial LIKE $1",
            prefix + "%",
        )
    assert dropped > 0, result.stdout  # the run did overload the broker
    assert committed == in_table
    assert (sent, unaccounted) == (committed + rejected + dropped, 0), result.stdout
    assert f"sent {sent:,} messages, {sent:,} acknowledged by the broker" in result.stdout
    assert "warning: the broker acknowledged readings it then dropped" in result.stdout
    # The broker started with this test: its count is this run's drops, and ingest exports it
    # and said so in its log.
    assert broker_total == dropped == exported
    assert "the broker dropped messages it had acknowledged" in log.read_text()
