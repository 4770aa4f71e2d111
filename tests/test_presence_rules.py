"""The presence ordering rule in the database: whatever order events arrive in, as the roles
that send them (ingest for statuses, readings and the sweeper; the API for revocations)."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from lifebox_grpc.store import presence
from lifebox_grpc.store.pool import tenant_transaction
from lifebox_grpc.store.presence import PresenceEvent
from tests.helpers import factories
from tests.helpers.services import Database


@pytest.fixture
def database(storage_database: Database) -> Database:
    return storage_database


@pytest.fixture
async def ingest_conn(storage_database: Database) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(storage_database.ingest_dsn)
    yield conn
    await conn.close()


NOW = datetime.now(UTC)


def event(
    client: uuid.UUID,
    device: uuid.UUID,
    state: str,
    session: int | None,
    cause: str = "",
    source: str = "status",
    seconds: float = 0,
) -> PresenceEvent:
    cause = cause or ("connect" if state == "online" else "keepalive")
    return PresenceEvent(
        client, device, state, session, cause, NOW + timedelta(seconds=seconds), source
    )


async def state_of(conn: asyncpg.Connection, device: uuid.UUID) -> tuple[str, int, str] | None:
    async with tenant_transaction(conn, None, staff=True):
        row = await conn.fetchrow(
            "SELECT state, session, cause FROM device_presence WHERE device_id = $1", device
        )
    return (row["state"], row["session"], row["cause"]) if row else None


async def history(conn: asyncpg.Connection, device: uuid.UUID) -> list[tuple[str, int, str]]:
    async with tenant_transaction(conn, None, staff=True):
        rows = await conn.fetch(
            "SELECT state, session, cause FROM device_connections WHERE device_id = $1 ORDER BY id",
            device,
        )
    return [(r["state"], r["session"], r["cause"]) for r in rows]


async def apply(conn: asyncpg.Connection, *events: PresenceEvent) -> int:
    async with conn.transaction():
        return await presence.apply_events(conn, events)


async def test_every_arrival_order_of_two_sessions_ends_in_the_newest_state(
    owner_conn: asyncpg.Connection, ingest_conn: asyncpg.Connection
) -> None:
    client = await factories.make_client(owner_conn)
    events = [
        ("online", 1, "connect"),
        ("offline", 1, "keepalive"),
        ("online", 2, "connect"),
        ("offline", 2, "clean"),
    ]
    for order in itertools.permutations(events):
        device, _ = await factories.make_device(owner_conn, client)
        for state, session, cause in order:  # one at a time, as separate batches
            await apply(ingest_conn, event(client, device, state, session, cause))
        assert await state_of(owner_conn, device) == ("offline", 2, "clean"), order
        # Redelivering everything changes nothing.
        again = [event(client, device, s, n, c) for s, n, c in order]
        assert await apply(ingest_conn, *again) == 0


async def test_a_replayed_old_will_does_not_flip_a_newer_online(
    owner_conn: asyncpg.Connection, ingest_conn: asyncpg.Connection
) -> None:
    client = await factories.make_client(owner_conn)
    device, _ = await factories.make_device(owner_conn, client)
    await apply(ingest_conn, event(client, device, "online", 7))
    await apply(ingest_conn, event(client, device, "offline", 7))
    await apply(ingest_conn, event(client, device, "online", 8))
    assert await apply(ingest_conn, event(client, device, "offline", 7)) == 0
    assert await apply(ingest_conn, event(client, device, "online", 7)) == 0
    assert await state_of(owner_conn, device) == ("online", 8, "connect")
    assert await history(owner_conn, device) == [
        ("online", 7, "connect"),
        ("offline", 7, "keepalive"),
        ("online", 8, "connect"),
    ]


async def test_a_newer_session_online_over_a_live_one_records_the_takeover_as_kicked(
    owner_conn: asyncpg.Connection, ingest_conn: asyncpg.Connection
) -> None:
    client = await factories.make_client(owner_conn)
    device, _ = await factories.make_device(owner_conn, client)
    await apply(ingest_conn, event(client, device, "online", 1))
    await apply(ingest_conn, event(client, device, "online", 2))
    # The old session's Will, late: older than the state.
    await apply(ingest_conn, event(client, device, "offline", 1))
    assert await state_of(owner_conn, device) == ("online", 2, "connect")
    assert await history(owner_conn, device) == [
        ("online", 1, "connect"),
        ("offline", 1, "kicked"),
        ("online", 2, "connect"),
    ]


async def test_silent_devices_go_stale_and_a_reading_brings_them_back(
    owner_conn: asyncpg.Connection, ingest_conn: asyncpg.Connection
) -> None:
    client = await factories.make_client(owner_conn)
    quiet, _ = await factories.make_device(owner_conn, client)
    talking, _ = await factories.make_device(owner_conn, client)
    for device in (quiet, talking):
        async with tenant_transaction(owner_conn, None, staff=True):
            await owner_conn.execute(
                "UPDATE devices SET expected_interval_s = 1 WHERE id = $1", device
            )
    long_ago = -60
    await apply(
        ingest_conn,
        event(client, quiet, "online", 3, seconds=long_ago),
        event(client, talking, "online", 3, seconds=long_ago),
    )
    # talking sent a reading a moment ago (ingest moves last_seen_at).
    await ingest_conn.execute("UPDATE devices SET last_seen_at = now() WHERE id = $1", talking)
    assert await presence.sweep_stale(ingest_conn) >= 1
    assert await state_of(owner_conn, quiet) == ("stale", 3, "silent")
    assert await state_of(owner_conn, talking) == ("online", 3, "connect")
    # A stale device's same-session online (a redelivery) is old news; a reading is not.
    assert await apply(ingest_conn, event(client, quiet, "online", 3)) == 0
    await ingest_conn.execute("UPDATE devices SET last_seen_at = now() WHERE id = $1", quiet)
    assert await state_of(owner_conn, quiet) == ("online", 3, "reading")
    # Its Will still ends the session.
    await apply(ingest_conn, event(client, quiet, "offline", 3))
    assert await state_of(owner_conn, quiet) == ("offline", 3, "keepalive")
    # A reading never revives an offline device.
    await ingest_conn.execute("UPDATE devices SET last_seen_at = now() WHERE id = $1", quiet)
    assert await state_of(owner_conn, quiet) == ("offline", 3, "keepalive")


async def test_revoking_disabling_or_suspending_takes_devices_offline_as_revoked(
    owner_conn: asyncpg.Connection, ingest_conn: asyncpg.Connection, database: Database
) -> None:
    client = await factories.make_client(owner_conn)
    revoked, _ = await factories.make_device(owner_conn, client)
    disabled, _ = await factories.make_device(owner_conn, client)
    suspended, _ = await factories.make_device(owner_conn, client)
    untracked, _ = await factories.make_device(owner_conn, client)
    for device in (revoked, disabled, suspended):
        await apply(ingest_conn, event(client, device, "online", 5))
    app = await asyncpg.connect(database.app_dsn)
    try:
        async with tenant_transaction(app, client):
            await app.execute(
                "INSERT INTO device_credentials (client_id, device_id, username, password_hash,"
                " hash_iterations, hash_salt, hash_digest) SELECT client_id, id, serial,"
                " '$7$101$c2FsdA==$ZA==', 101, 'saltsalt', 'ZA==' FROM devices WHERE id = $1",
                revoked,
            )
        async with tenant_transaction(app, client):
            await app.execute(
                "UPDATE device_credentials SET revoked_at = now() WHERE device_id = $1", revoked
            )
            await app.execute(
                "UPDATE devices SET status = 'disabled' WHERE id = ANY($1::uuid[])",
                [disabled, untracked],
            )
        assert await state_of(owner_conn, revoked) == ("offline", 5, "revoked")
        assert await state_of(owner_conn, disabled) == ("offline", 5, "revoked")
        assert await state_of(owner_conn, suspended) == ("online", 5, "connect")
        assert await state_of(owner_conn, untracked) is None
        async with tenant_transaction(app, None, staff=True):
            await app.execute("UPDATE clients SET status = 'suspended' WHERE id = $1", client)
        assert await state_of(owner_conn, suspended) == ("offline", 5, "revoked")
    finally:
        await app.close()
    # The session's Will, sent when the broker closes it, is the same session: no change.
    assert await apply(ingest_conn, event(client, revoked, "offline", 5)) == 0
    assert (await history(owner_conn, revoked))[-1] == ("offline", 5, "revoked")


async def test_two_workers_racing_on_the_first_events_of_a_device_agree(
    owner_conn: asyncpg.Connection, storage_database: Database
) -> None:
    client = await factories.make_client(owner_conn)
    device, _ = await factories.make_device(owner_conn, client)
    one = await asyncpg.connect(storage_database.ingest_dsn)
    two = await asyncpg.connect(storage_database.ingest_dsn)
    try:
        # Worker one holds the device's first event uncommitted while worker two applies a
        # newer one: two waits on the row, then decides against what one committed.
        tx = one.transaction()
        await tx.start()
        await presence.apply_events(one, [event(client, device, "online", 9)])

        racing = asyncio.ensure_future(apply(two, event(client, device, "offline", 9)))
        await asyncio.sleep(0.2)
        assert not racing.done()
        await tx.commit()
        assert await racing == 1
    finally:
        await one.close()
        await two.close()
    assert await state_of(owner_conn, device) == ("offline", 9, "keepalive")


async def test_the_sweep_marks_at_most_its_batch_and_the_rest_next_time(
    owner_conn: asyncpg.Connection, ingest_conn: asyncpg.Connection
) -> None:
    client = await factories.make_client(owner_conn)
    devices = [(await factories.make_device(owner_conn, client))[0] for _ in range(3)]
    async with tenant_transaction(owner_conn, None, staff=True):
        await owner_conn.execute(
            "UPDATE devices SET expected_interval_s = 1 WHERE id = ANY($1::uuid[])", devices
        )
    await apply(ingest_conn, *(event(client, d, "online", 1, seconds=-60) for d in devices))
    # Other tests' silent devices may be due too: sweep until ours are all stale.
    marked = await presence.sweep_stale(ingest_conn, limit=1)
    assert marked == 1
    while await presence.sweep_stale(ingest_conn, limit=2):
        pass
    assert [await state_of(owner_conn, d) for d in devices] == [("stale", 1, "silent")] * 3
