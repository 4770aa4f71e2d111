"""Presence end to end: real mosquitto, real paho devices (some behind a TCP proxy that goes
silent), real `lifebox ingest` subprocesses, a real database."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from lifebox_grpc.presence.retained import apply_retained
from lifebox_grpc.presence.sweeper import LEASE_KEY
from lifebox_grpc.runtime.mosquitto import EmbeddedMosquitto
from lifebox_grpc.store.pool import tenant_transaction
from tests.helpers.ingest import IngestProcess, publisher, register_fleet, running_ingest
from tests.helpers.presence import (
    broker_login,
    presence_device,
    retained_status,
    status,
    status_topic,
    will_watch,
)
from tests.helpers.services import Database
from tests.helpers.tcp_proxy import tcp_proxy
from tests.helpers.wait import async_wait_until

pytestmark = pytest.mark.timeout(240)

KEEPALIVE = 2
# mosquitto 2.0.x: a 6 s keepalive scan over whole seconds (see the keepalive test).
MOSQUITTO_20_KEEPALIVE_SLACK = 8


@pytest.fixture
async def staff(database: Database) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database.owner_dsn)
    yield conn
    await conn.close()


async def presence_row(conn: asyncpg.Connection, device: uuid.UUID) -> tuple[str, int, str] | None:
    async with tenant_transaction(conn, None, staff=True):
        row = await conn.fetchrow(
            "SELECT state, session, cause FROM device_presence WHERE device_id = $1", device
        )
    return (row["state"], row["session"], row["cause"]) if row else None


async def wait_presence(
    conn: asyncpg.Connection,
    device: uuid.UUID,
    expected: tuple[str, int, str],
    timeout: float = 30,
) -> None:
    seen: list[object] = []

    async def reached() -> bool:
        seen.append(await presence_row(conn, device))
        return seen[-1] == expected

    try:
        await async_wait_until(reached, timeout, f"presence {expected}")
    except TimeoutError as exc:
        raise AssertionError(f"presence stayed {seen[-1]}, expected {expected}") from exc


async def history(conn: asyncpg.Connection, device: uuid.UUID) -> list[tuple[str, int, str, str]]:
    async with tenant_transaction(conn, None, staff=True):
        rows = await conn.fetch(
            "SELECT state, session, cause, source FROM device_connections "
            "WHERE device_id = $1 ORDER BY id",
            device,
        )
    return [(r["state"], r["session"], r["cause"], r["source"]) for r in rows]


async def test_a_silent_network_drop_is_offline_by_keepalive_within_the_bound(
    database: Database, broker: EmbeddedMosquitto, staff: asyncpg.Connection
) -> None:
    fleet = await register_fleet(database.owner_dsn, 1)
    device_id, serial = fleet.devices[0]
    with (
        running_ingest(database, broker.url, broker.port),
        tcp_proxy(broker.port) as proxy,
        presence_device(
            serial, proxy.port, keepalive=KEEPALIVE, login=broker_login(broker)
        ) as device,
    ):
        await wait_presence(staff, device_id, ("online", device.session, "connect"))
        with will_watch(broker, serial) as will_seen:
            frozen_at = time.monotonic()
            proxy.freeze()  # no FIN, no DISCONNECT: the broker only notices the silence
            await wait_presence(
                staff, device_id, ("offline", device.session, "keepalive"), 1.5 * KEEPALIVE + 10
            )
            took = time.monotonic() - frozen_at
        assert will_seen, "the broker sent no Will"
        broker_s = will_seen[0] - frozen_at
        # LifeBox's part: from the broker's Will to the stored offline, within the 2 s.
        assert took - broker_s <= 2, f"stored {took - broker_s:.2f}s after the Will"
        # The broker's part: 1.5 x keepalive as the spec says, but mosquitto 2.0 scans its
        # clients' keepalives only every 6 s in whole seconds (src/keepalive.c, `if
        # (last_keepalive_check + 5 < db.now_s)`; 2.1 replaced it with a per-second ring), so
        # its Will comes up to ~8 s past the deadline.
        assert broker_s <= 1.5 * KEEPALIVE + MOSQUITTO_20_KEEPALIVE_SLACK, f"Will at {broker_s}"
    assert [h[:3] for h in await history(staff, device_id)] == [
        ("online", device.session, "connect"),
        ("offline", device.session, "keepalive"),
    ]


async def test_a_clean_disconnect_says_clean_and_no_will_follows(
    database: Database, broker: EmbeddedMosquitto, staff: asyncpg.Connection
) -> None:
    fleet = await register_fleet(database.owner_dsn, 1)
    device_id, serial = fleet.devices[0]
    with running_ingest(database, broker.url, broker.port):
        with presence_device(serial, broker.port, login=broker_login(broker)) as device:
            await wait_presence(staff, device_id, ("online", device.session, "connect"))
            device.disconnect_cleanly()
        await wait_presence(staff, device_id, ("offline", device.session, "clean"))
        # Past the keepalive, the broker still holds the clean status, retained: no Will
        # replaced it (it would not change the state either: the same session's offline).
        await asyncio.sleep(1.5 * KEEPALIVE + 1)  # waiting for something not to happen
        retained = await asyncio.to_thread(retained_status, broker, serial)
        assert json.loads(retained) == {
            "state": "offline",
            "session": device.session,
            "reason": "clean",
        }
        assert await presence_row(staff, device_id) == ("offline", device.session, "clean")
    assert len(await history(staff, device_id)) == 2


async def test_a_connected_device_that_stops_publishing_goes_stale_then_back_with_a_reading(
    database: Database, broker: EmbeddedMosquitto, staff: asyncpg.Connection
) -> None:
    fleet = await register_fleet(database.owner_dsn, 1)
    device_id, serial = fleet.devices[0]
    interval = 1
    async with tenant_transaction(staff, None, staff=True):
        await staff.execute(
            "UPDATE devices SET expected_interval_s = $2 WHERE id = $1", device_id, interval
        )
    with (
        running_ingest(
            database, broker.url, broker.port, LIFEBOX_PRESENCE_SWEEP_INTERVAL_SECONDS="0.3"
        ),
        presence_device(serial, broker.port, keepalive=30, login=broker_login(broker)) as device,
    ):
        await wait_presence(staff, device_id, ("online", device.session, "connect"))
        online_at = time.monotonic()
        await wait_presence(staff, device_id, ("stale", device.session, "silent"), 20)
        assert time.monotonic() - online_at >= 3 * interval - 0.5
        reading = {"ts": int(time.time() * 1000), "temperature_c": 20.5}
        device.publish(f"lifebox/v1/{serial}/telemetry", json.dumps(reading).encode())
        await wait_presence(staff, device_id, ("online", device.session, "reading"))


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
async def test_two_workers_agree_whatever_order_the_events_arrive_in(
    database: Database,
    broker: EmbeddedMosquitto,
    staff: asyncpg.Connection,
    order: tuple[int, ...],
) -> None:
    fleet = await register_fleet(database.owner_dsn, 8)
    # Per device: the older session's online and Will, and the newer session's online.
    events = [("online", 1), ("offline", 1), ("online", 2)]
    with (
        running_ingest(database, broker.url, broker.port) as one,
        running_ingest(database, broker.url, broker.port) as two,
        publisher(broker.port) as pub,
    ):
        # Each event is published for every device before the next: the shared
        # subscription deals consecutive messages to the two workers in turn, so a device's
        # events are split between workers that commit independently.
        pub.publish_all(
            [
                (status_topic(serial), status(*events[i]))
                for i in order
                for _, serial in fleet.devices
            ]
        )
        for device_id, _ in fleet.devices:
            await wait_presence(staff, device_id, ("online", 2, "connect"))
        assert one.metric("lifebox_ingest_messages_total") > 0
        assert two.metric("lifebox_ingest_messages_total") > 0


async def test_a_replayed_old_will_does_not_flip_a_newer_online(
    database: Database, broker: EmbeddedMosquitto, staff: asyncpg.Connection
) -> None:
    fleet = await register_fleet(database.owner_dsn, 1)
    device_id, serial = fleet.devices[0]
    with (
        running_ingest(database, broker.url, broker.port),
        presence_device(serial, broker.port, session=41, login=broker_login(broker)),
    ):
        await wait_presence(staff, device_id, ("online", 41, "connect"))
        with publisher(broker.port) as pub:
            pub.publish_all(
                [
                    (status_topic(serial), status("offline", 40)),  # an older session's Will
                    (status_topic(serial), status("online", 41)),  # a redelivered online
                    (status_topic(serial), b'{"state": "gone", "session": 41}'),
                ]
            )

        async def rejected() -> bool:
            async with tenant_transaction(staff, None, staff=True):
                return bool(
                    await staff.fetchval(
                        "SELECT count(*) FROM ingest_rejects WHERE serial = $1 "
                        "AND code = 'invalid_value'",
                        serial,
                    )
                )

        await async_wait_until(rejected, 30, "the bad status stored as a reject")
        assert await presence_row(staff, device_id) == ("online", 41, "connect")
    assert [h[:3] for h in await history(staff, device_id)] == [("online", 41, "connect")]


async def test_statuses_retained_while_ingest_was_down_are_read_at_its_start(
    database: Database, broker: EmbeddedMosquitto, staff: asyncpg.Connection
) -> None:
    fleet = await register_fleet(database.owner_dsn, 2)
    (up_id, up_serial), (down_id, down_serial) = fleet.devices
    login = broker_login(broker)
    with presence_device(up_serial, broker.port, session=5, login=login):
        with publisher(broker.port) as pub:
            pub.client.publish(
                status_topic(down_serial), status("offline", 3, reason="clean"), 1, True
            ).wait_for_publish(10)
        # Nobody from LifeBox was subscribed: only the broker holds these, retained.
        with running_ingest(database, broker.url, broker.port):
            await wait_presence(staff, up_id, ("online", 5, "connect"))
            await wait_presence(staff, down_id, ("offline", 3, "clean"))
            # mosquitto 2.0.11 also hands retained messages to a new shared subscription
            # (MQTT 5 says it must not): whichever path comes first applies them, once.
            assert [h[3] for h in await history(staff, up_id)] in (["retained"], ["status"])


async def test_the_retained_read_applies_each_status_once_through_the_ordering_rule(
    database: Database, broker: EmbeddedMosquitto, staff: asyncpg.Connection
) -> None:
    fleet = await register_fleet(database.owner_dsn, 3)
    (a, a_serial), (b, b_serial), (_, c_serial) = fleet.devices
    with publisher(broker.port) as pub:
        for topic, payload in (
            (status_topic(a_serial), status("online", 12)),
            (status_topic(b_serial), status("offline", 4, reason="clean")),
            (status_topic(c_serial), b"not json"),
            (status_topic("UNKNOWN-" + uuid.uuid4().hex[:8]), status("online", 1)),
        ):
            pub.client.publish(topic, payload, 1, True).wait_for_publish(10)
    conn = await asyncpg.connect(database.ingest_dsn)
    try:
        first = await apply_retained(conn, broker.url, quiet_s=0.5)
        again = await apply_retained(conn, broker.url, quiet_s=0.5)
    finally:
        await conn.close()
    assert first.applied >= 2  # ours, and any other test's device whose Will came late
    assert first.skipped >= 2  # the unreadable one and the unknown serial
    # Read again (other tests' devices may have changed meanwhile): ours are unchanged.
    assert again.read >= 4
    assert await presence_row(staff, a) == ("online", 12, "connect")
    assert await presence_row(staff, b) == ("offline", 4, "clean")
    assert [h[3] for h in await history(staff, a)] == ["retained"]
    assert [h[3] for h in await history(staff, b)] == ["retained"]


LEASE_HOLDER = "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objid = $1"


async def test_the_sweeper_lease_passes_on_when_its_worker_is_killed(
    database: Database, broker: EmbeddedMosquitto, staff: asyncpg.Connection
) -> None:
    fleet = await register_fleet(database.owner_dsn, 1)
    device_id, serial = fleet.devices[0]
    async with tenant_transaction(staff, None, staff=True):
        await staff.execute("UPDATE devices SET expected_interval_s = 1 WHERE id = $1", device_id)
    fast = {"LIFEBOX_PRESENCE_SWEEP_INTERVAL_SECONDS": "0.3"}
    first = IngestProcess(database, broker.url, extra_env=fast)
    second = IngestProcess(database, broker.url, extra_env=fast)
    first.start()
    try:
        holder = await async_wait_until(
            lambda: staff.fetchval(LEASE_HOLDER, LEASE_KEY), 30, "a lease holder"
        )
        second.start()
        first.kill()  # SIGKILL: its database session, and with it the lease, goes
        # (mosquitto keeps queueing shared messages for its persistent MQTT session until it
        # comes back; this worker is gone for good)
        first.forget_session(broker.port)

        async def taken_over() -> bool:
            return (await staff.fetchval(LEASE_HOLDER, LEASE_KEY)) not in (None, holder)

        await async_wait_until(taken_over, 30, "the lease taken over by the other worker")
        with presence_device(serial, broker.port, keepalive=30, login=broker_login(broker)) as d:
            await wait_presence(staff, device_id, ("online", d.session, "connect"))
            await wait_presence(staff, device_id, ("stale", d.session, "silent"), 20)
    finally:
        for worker in (first, second):
            worker.stop()
            worker.forget_session(broker.port)


async def test_statuses_of_a_worker_killed_mid_batch_are_applied_once_after_restart(
    database: Database, broker: EmbeddedMosquitto, staff: asyncpg.Connection
) -> None:
    fleet = await register_fleet(database.owner_dsn, 50)
    events = [("online", 1), ("offline", 1), ("online", 2)]
    worker = IngestProcess(database, broker.url)
    worker.start()
    try:
        with publisher(broker.port) as pub:
            pub.publish_all(
                [
                    (status_topic(serial), status(*event))
                    for event in events
                    for _, serial in fleet.devices
                ]
            )
        worker.kill()  # whatever was not committed is not acknowledged: redelivered
        worker.start()  # the same MQTT session
        for device_id, _ in fleet.devices:
            await wait_presence(staff, device_id, ("online", 2, "connect"))
            rows = await history(staff, device_id)
            assert len(rows) == len(set(rows)), rows  # no change recorded twice
            assert rows[0][:2] == ("online", 1)
    finally:
        worker.stop()
        worker.forget_session(broker.port)


async def test_a_reconnect_that_takes_the_session_over_records_the_old_one_as_kicked(
    database: Database, broker: EmbeddedMosquitto, staff: asyncpg.Connection
) -> None:
    fleet = await register_fleet(database.owner_dsn, 1)
    device_id, serial = fleet.devices[0]
    login = broker_login(broker)
    # A Will Delay Interval and a persistent session: a reconnect within the delay takes the
    # session over and the broker drops the old connection's Will (MQTT 5 3.1.3.2.2).
    with (
        running_ingest(database, broker.url, broker.port),
        presence_device(serial, broker.port, session=1, login=login, will_delay=10) as old,
    ):
        await wait_presence(staff, device_id, ("online", 1, "connect"))
        old.abandon()  # its client would reconnect and take the session back
        with presence_device(serial, broker.port, session=2, login=login, will_delay=10):
            await wait_presence(staff, device_id, ("online", 2, "connect"))
            assert [h[:3] for h in await history(staff, device_id)] == [
                ("online", 1, "connect"),
                ("offline", 1, "kicked"),
                ("online", 2, "connect"),
            ]
