"""StreamAlarmEvents rides the stream engine: every statement writing alarm changes announces
the (client, device) pairs it touched, delivered only once it commits (0079), so streams wake
on commits instead of polling the table."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from lifebox_grpc.services.alarms.fanout import CHANNEL, parse_change
from lifebox_grpc.store.pool import tenant_transaction
from tests.helpers import factories
from tests.helpers.alarms import make_rule
from tests.helpers.scratch_db import Database

pytestmark = pytest.mark.timeout(60)


async def test_a_committed_alarm_change_is_announced_once_per_device_and_only_at_commit(
    database: Database, owner_conn: asyncpg.Connection
) -> None:
    client_id = await factories.make_client(owner_conn)
    device, _ = await factories.make_device(owner_conn, client_id)
    rule = await make_rule(owner_conn, client_id, device_id=device)
    heard: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(database.owner_dsn)
    try:
        await listener.add_listener(CHANNEL, lambda *args: heard.put_nowait(args[3]))
        writer = await asyncpg.connect(database.owner_dsn)
        try:
            async with tenant_transaction(writer, None, staff=True):
                event = await writer.fetchval(
                    "INSERT INTO alarm_events (client_id, rule_id, device_id, severity, "
                    "raised_at, trigger_value) VALUES ($1, $2, $3, 'major', now(), 42) "
                    "RETURNING id",
                    client_id,
                    rule,
                    device,
                )
                await writer.execute(
                    "INSERT INTO alarm_event_changes (client_id, event_id, rule_id, device_id, "
                    "change, status, changed_at) VALUES ($1, $2, $3, $4, 'raised', "
                    "'active_unack', now())",
                    client_id,
                    event,
                    rule,
                    device,
                )
                await asyncio.sleep(0.5)
                assert heard.empty(), "announced before its transaction committed"
        finally:
            await writer.close()
        payload = await asyncio.wait_for(heard.get(), 10)
        notice = parse_change(payload)
        assert (notice.client_id, notice.device_id) == (client_id, device)
        await asyncio.sleep(0.5)
        assert heard.empty(), "one statement, one device: one notice"
    finally:
        await listener.close()
