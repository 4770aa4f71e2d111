"""Presence through the API: Device.presence and online, the state filter, the paged
connection history, and StreamDeviceEvents scoped to what its caller may see, re-checked."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import grpc
import pytest

from lifebox.v1 import devices_pb2, devices_pb2_grpc
from lifebox_grpc.runtime.mosquitto import EmbeddedMosquitto
from lifebox_grpc.store import presence
from lifebox_grpc.store.presence import PresenceEvent
from tests.helpers import factories
from tests.helpers.grpc import Server, close_server, make_tenant, open_server, server_settings
from tests.helpers.services import Database

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def ingest_conn(database: Database) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database.ingest_dsn)
    yield conn
    await conn.close()


def stub(server: Server) -> devices_pb2_grpc.DeviceServiceStub:
    return devices_pb2_grpc.DeviceServiceStub(server.channel)


async def say(
    conn: asyncpg.Connection,
    client: uuid.UUID,
    device: uuid.UUID,
    state: str,
    session: int,
    cause: str = "",
) -> None:
    """A status as ingest applies it."""
    cause = cause or ("connect" if state == "online" else "keepalive")
    async with conn.transaction():
        await presence.apply_events(
            conn,
            [PresenceEvent(client, device, state, session, cause, datetime.now(UTC), "status")],
        )


async def test_devices_show_presence_and_filter_by_state(
    grpc_server: Server, owner_conn: asyncpg.Connection, ingest_conn: asyncpg.Connection
) -> None:
    tenant = await make_tenant(grpc_server, owner_conn)
    md = tenant.users["client"].md
    up, _ = await factories.make_device(owner_conn, tenant.client_id)
    down, _ = await factories.make_device(owner_conn, tenant.client_id)
    silent, _ = await factories.make_device(owner_conn, tenant.client_id)  # never said a word
    await say(ingest_conn, tenant.client_id, up, "online", 3)
    await say(ingest_conn, tenant.client_id, down, "online", 8)
    await say(ingest_conn, tenant.client_id, down, "offline", 8, "clean")
    api = stub(grpc_server)
    got = (await api.GetDevice(devices_pb2.GetDeviceRequest(id=str(up)), metadata=md)).device
    assert got.online
    assert got.presence.state == devices_pb2.PRESENCE_STATE_ONLINE
    assert got.presence.session == 3
    assert got.presence.cause == devices_pb2.PRESENCE_CAUSE_CONNECT
    assert got.presence.HasField("last_connect_time")
    got = (await api.GetDevice(devices_pb2.GetDeviceRequest(id=str(down)), metadata=md)).device
    assert not got.online
    assert got.presence.cause == devices_pb2.PRESENCE_CAUSE_CLEAN
    assert got.presence.HasField("last_disconnect_time")
    got = (await api.GetDevice(devices_pb2.GetDeviceRequest(id=str(silent)), metadata=md)).device
    assert not got.HasField("presence")
    for state, expected in (
        (devices_pb2.PRESENCE_STATE_ONLINE, {up}),
        (devices_pb2.PRESENCE_STATE_OFFLINE, {down}),
        (devices_pb2.PRESENCE_STATE_STALE, set()),
        (devices_pb2.PRESENCE_STATE_UNSPECIFIED, {up, down, silent}),
    ):
        listed = await api.ListDevices(
            devices_pb2.ListDevicesRequest(presence_state=state), metadata=md
        )
        assert {uuid.UUID(d.id) for d in listed.devices} == expected, state
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await api.ListDevices(
            devices_pb2.ListDevicesRequest(presence_state=devices_pb2.PresenceState.ValueType(99)),
            metadata=md,
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_connection_history_is_paged_newest_first(
    grpc_server: Server, owner_conn: asyncpg.Connection, ingest_conn: asyncpg.Connection
) -> None:
    tenant = await make_tenant(grpc_server, owner_conn)
    device, _ = await factories.make_device(owner_conn, tenant.client_id)
    for session in range(1, 6):
        await say(ingest_conn, tenant.client_id, device, "online", session)
        await say(ingest_conn, tenant.client_id, device, "offline", session)
    api = stub(grpc_server)
    seen: list[tuple[int, int]] = []
    token = ""
    pages = 0
    while True:
        page = await api.ListDeviceConnections(
            devices_pb2.ListDeviceConnectionsRequest(
                device_id=str(device), page_size=3, page_token=token
            ),
            metadata=tenant.users["client"].md,
        )
        seen += [(e.session, e.state) for e in page.events]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert pages == 4
    expected = [
        (s, st)
        for s in range(5, 0, -1)
        for st in (devices_pb2.PRESENCE_STATE_OFFLINE, devices_pb2.PRESENCE_STATE_ONLINE)
    ]
    assert seen == expected
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await api.ListDeviceConnections(
            devices_pb2.ListDeviceConnectionsRequest(device_id=str(device), page_token="x"),
            metadata=tenant.users["client"].md,
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # A viewer without the device's assignment does not see it.
    with pytest.raises(grpc.aio.AioRpcError) as hidden:
        await api.ListDeviceConnections(
            devices_pb2.ListDeviceConnectionsRequest(device_id=str(device)),
            metadata=tenant.users["viewer"].md,
        )
    assert hidden.value.code() == grpc.StatusCode.NOT_FOUND


async def _next_event(
    stream: grpc.aio.UnaryStreamCall, timeout: float = 10
) -> devices_pb2.DeviceConnectionEvent:
    reply = await asyncio.wait_for(stream.read(), timeout)
    assert isinstance(reply, devices_pb2.StreamDeviceEventsResponse)
    return reply.event


async def _drain(stream: grpc.aio.UnaryStreamCall) -> None:
    while await stream.read() is not grpc.aio.EOF:
        pass


async def test_the_stream_sends_each_visible_change_once_and_follows_assignments(
    database: Database,
    broker: EmbeddedMosquitto,
    owner_conn: asyncpg.Connection,
    ingest_conn: asyncpg.Connection,
) -> None:
    # Re-checked every second, as the principal cache lives.
    server = await open_server(server_settings(database, broker, principal_cache_seconds=1.0))
    try:
        home = await make_tenant(server, owner_conn)
        away = await make_tenant(server, owner_conn)
        mine, _ = await factories.make_device(owner_conn, home.client_id)
        other, _ = await factories.make_device(owner_conn, home.client_id)
        foreign, _ = await factories.make_device(owner_conn, away.client_id)
        api = stub(server)
        operator = home.users["operator"]
        await api.AssignDevice(
            devices_pb2.AssignDeviceRequest(device_id=str(mine), user_id=str(operator.user_id)),
            metadata=home.users["client"].md,
        )
        admin_stream = api.StreamDeviceEvents(
            devices_pb2.StreamDeviceEventsRequest(), metadata=home.users["client"].md
        )
        operator_stream = api.StreamDeviceEvents(
            devices_pb2.StreamDeviceEventsRequest(), metadata=operator.md
        )
        for stream in (admin_stream, operator_stream):  # live: the first message says so
            first = await asyncio.wait_for(stream.read(), 10)
            assert first is not grpc.aio.EOF
            assert not first.HasField("event")
        await say(ingest_conn, away.client_id, foreign, "online", 1)
        await say(ingest_conn, home.client_id, other, "online", 1)
        await say(ingest_conn, home.client_id, mine, "online", 2)
        await say(ingest_conn, home.client_id, mine, "online", 2)  # a redelivery: no change
        await say(ingest_conn, home.client_id, mine, "offline", 2)
        admin_events = [await _next_event(admin_stream) for _ in range(3)]
        assert [(uuid.UUID(e.device_id), e.session, e.state) for e in admin_events] == [
            (other, 1, devices_pb2.PRESENCE_STATE_ONLINE),
            (mine, 2, devices_pb2.PRESENCE_STATE_ONLINE),
            (mine, 2, devices_pb2.PRESENCE_STATE_OFFLINE),
        ]
        operator_events = [await _next_event(operator_stream) for _ in range(2)]
        assert [(uuid.UUID(e.device_id), e.state) for e in operator_events] == [
            (mine, devices_pb2.PRESENCE_STATE_ONLINE),
            (mine, devices_pb2.PRESENCE_STATE_OFFLINE),
        ]
        # Unassigned: within a re-check the operator's stream stops showing the device.
        await api.UnassignDevice(
            devices_pb2.UnassignDeviceRequest(device_id=str(mine), user_id=str(operator.user_id)),
            metadata=home.users["client"].md,
        )
        await asyncio.sleep(2.5)  # two and a half re-check intervals
        await say(ingest_conn, home.client_id, mine, "online", 3)
        assert (await _next_event(admin_stream)).session == 3
        with pytest.raises(TimeoutError):
            await _next_event(operator_stream, timeout=2)
        # A stream of named devices ends when one is no longer visible.
        named = api.StreamDeviceEvents(
            devices_pb2.StreamDeviceEventsRequest(device_ids=[str(mine)]), metadata=operator.md
        )
        with pytest.raises(grpc.aio.AioRpcError) as gone:
            await _drain(named)
        assert gone.value.code() == grpc.StatusCode.NOT_FOUND
        admin_stream.cancel()
        operator_stream.cancel()
    finally:
        await close_server(server)
