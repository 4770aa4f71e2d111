"""Server streams re-check their caller: a stream ends (UNAUTHENTICATED, PERMISSION_DENIED or
NOT_FOUND) once its user is disabled, loses the device's assignment, changes role, has their
client suspended, or once its access token expires; an unchanged caller's stream runs on."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf import empty_pb2

from lifebox.v1 import (
    alarms_pb2,
    alarms_pb2_grpc,
    commands_pb2,
    commands_pb2_grpc,
    devices_pb2,
    devices_pb2_grpc,
    telemetry_pb2,
    telemetry_pb2_grpc,
)
from lifebox_grpc.auth import tokens
from lifebox_grpc.auth.permissions import USERS_READ, Access, Rule
from lifebox_grpc.auth.principal import Principal
from lifebox_grpc.interceptors.stream_access import recheck_stream
from lifebox_grpc.runtime.mosquitto import EmbeddedMosquitto
from lifebox_grpc.store.pool import tenant_transaction
from tests.helpers import factories
from tests.helpers.grpc import (
    Account,
    Server,
    bearer,
    close_server,
    error_of,
    make_account,
    open_server,
    server_settings,
    sign_in,
)
from tests.helpers.services import Database
from tests.helpers.wait import async_wait_until

pytestmark = pytest.mark.timeout(120)

# The principal cache's lifetime, and so the re-check interval, of the server under test.
RECHECK_SECONDS = 1.0
PROBE = "lifebox.test.StreamAccess"


async def _ticks(request: empty_pb2.Empty, context: Any) -> AsyncIterator[empty_pb2.Empty]:
    """A stream that needs users.read and sends a message after each passed re-check."""
    passed = asyncio.Queue[None]()

    def check(principal: Principal) -> None:
        passed.put_nowait(None)

    recheck_stream(check)
    yield empty_pb2.Empty()
    while True:
        await passed.get()
        yield empty_pb2.Empty()


PROBE_HANDLERS = grpc.method_handlers_generic_handler(
    PROBE,
    {
        "Ticks": grpc.unary_stream_rpc_method_handler(
            _ticks,
            request_deserializer=empty_pb2.Empty.FromString,
            response_serializer=empty_pb2.Empty.SerializeToString,
        )
    },
)


@pytest.fixture(scope="module")
async def server(database: Database, broker: EmbeddedMosquitto) -> AsyncIterator[Server]:
    running = await open_server(
        server_settings(database, broker, principal_cache_seconds=RECHECK_SECONDS),
        extra_handlers=[PROBE_HANDLERS],
        extra_rules={f"/{PROBE}/Ticks": Rule(Access.AUTHENTICATED, USERS_READ)},
    )
    yield running
    await close_server(running)


def _ticks_of(server: Server, md: Any) -> Any:
    call = server.channel.unary_stream(
        f"/{PROBE}/Ticks",
        request_serializer=empty_pb2.Empty.SerializeToString,
        response_deserializer=empty_pb2.Empty.FromString,
    )
    return call(empty_pb2.Empty(), metadata=md)


async def _as_staff(conn: asyncpg.Connection, sql: str, *args: object) -> None:
    async with tenant_transaction(conn, None, staff=True):
        await conn.execute(sql, *args)


async def _viewer_with_device(
    server: Server, conn: asyncpg.Connection
) -> tuple[Account, uuid.UUID]:
    client = await factories.make_client(conn)
    viewer = await make_account(conn, "viewer", client)
    device, _ = await factories.make_device(conn, client)
    await _as_staff(
        conn,
        "INSERT INTO user_device_assignments (user_id, device_id, client_id) VALUES ($1, $2, $3)",
        viewer.user_id,
        device,
        client,
    )
    return await sign_in(server, viewer), device


async def _open_stream(server: Server, account: Account, device: uuid.UUID, md: Any = None) -> Any:
    """A StreamTelemetry of ``account``, once its handler runs (authorized, counted)."""
    api = telemetry_pb2_grpc.TelemetryServiceStub(server.channel)
    limits = server.running.limits
    assert limits is not None
    before = limits.streams.by_principal.get(account.user_id, 0)
    call = api.StreamTelemetry(
        telemetry_pb2.StreamTelemetryRequest(device_ids=[str(device)], fields=["voltage_l1"]),
        metadata=md or account.md,
    )

    async def running() -> bool:
        return limits.streams.by_principal.get(account.user_id, 0) > before

    await async_wait_until(running, 30, "the stream's handler running")
    return call


async def _ended_with(call: Any) -> tuple[grpc.StatusCode, dict[str, Any]]:
    """How a stream that sends nothing more ends (it must end, well within the test's time)."""
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        await asyncio.wait_for(_last(call), 30)
    return error_of(ended.value)


async def _last(call: Any) -> None:
    """Read until the stream ends (messages still queued, a probe's ticks, may come first)."""
    while await call.read() is not grpc.aio.EOF:
        pass


async def test_an_unchanged_callers_stream_runs_on_through_its_rechecks(
    server: Server, owner_conn: asyncpg.Connection
) -> None:
    admin = await sign_in(
        server, await make_account(owner_conn, "client", await factories.make_client(owner_conn))
    )
    call = _ticks_of(server, admin.md)
    for _ in range(4):  # the opening message, then one per passed re-check
        assert await asyncio.wait_for(call.read(), 30) is not grpc.aio.EOF
    call.cancel()


async def test_a_stream_of_a_disabled_user_ends_unauthenticated(
    server: Server, owner_conn: asyncpg.Connection
) -> None:
    viewer, device = await _viewer_with_device(server, owner_conn)
    call = await _open_stream(server, viewer, device)
    await _as_staff(
        owner_conn, "UPDATE users SET status = 'disabled' WHERE id = $1", viewer.user_id
    )
    code, _ = await _ended_with(call)
    assert code is grpc.StatusCode.UNAUTHENTICATED


async def test_a_stream_ends_not_found_when_the_device_is_unassigned(
    server: Server, owner_conn: asyncpg.Connection
) -> None:
    viewer, device = await _viewer_with_device(server, owner_conn)
    call = await _open_stream(server, viewer, device)
    await _as_staff(
        owner_conn, "DELETE FROM user_device_assignments WHERE user_id = $1", viewer.user_id
    )
    code, details = await _ended_with(call)
    assert code is grpc.StatusCode.NOT_FOUND
    assert details["ErrorInfo"].reason == "ERROR_REASON_NOT_FOUND"


async def test_a_role_change_ends_streams_the_new_role_may_not_hold(
    server: Server, owner_conn: asyncpg.Connection
) -> None:
    client = await factories.make_client(owner_conn)
    admin = await sign_in(server, await make_account(owner_conn, "client", client))
    device, _ = await factories.make_device(owner_conn, client)
    telemetry = await _open_stream(server, admin, device)
    users = _ticks_of(server, admin.md)
    await users.read()
    # A viewer sees only assigned devices (none) and may not read users.
    await _as_staff(owner_conn, "UPDATE users SET role = 'viewer' WHERE id = $1", admin.user_id)
    assert (await _ended_with(telemetry))[0] is grpc.StatusCode.NOT_FOUND
    assert (await _ended_with(users))[0] is grpc.StatusCode.PERMISSION_DENIED


async def test_a_stream_ends_permission_denied_when_its_client_is_suspended(
    server: Server, owner_conn: asyncpg.Connection
) -> None:
    viewer, device = await _viewer_with_device(server, owner_conn)
    call = await _open_stream(server, viewer, device)
    await _as_staff(
        owner_conn, "UPDATE clients SET status = 'suspended' WHERE id = $1", viewer.client_id
    )
    code, details = await _ended_with(call)
    assert code is grpc.StatusCode.PERMISSION_DENIED
    assert details["ErrorInfo"].reason == "ERROR_REASON_CLIENT_SUSPENDED"


async def test_a_stream_ends_unauthenticated_when_its_access_token_expires(
    server: Server, owner_conn: asyncpg.Connection
) -> None:
    viewer, device = await _viewer_with_device(server, owner_conn)
    keyring = tokens.keyring_from_settings(server.settings)
    signed_in = tokens.verify_access_token(keyring, viewer.access_token)
    assert signed_in.family_id is not None
    # The same session, with a token that lives two seconds (the shortest a setting allows
    # is a minute).
    short = tokens.issue_access_token(
        keyring, viewer.user_id, viewer.client_id, "viewer", signed_in.family_id, ttl=2
    )
    call = await _open_stream(server, viewer, device, bearer(short.token))
    code, _ = await _ended_with(call)
    assert code is grpc.StatusCode.UNAUTHENTICATED


# --- every stream of the engine (issue 21): the same re-checks end them ---


def _device_events(server: Server, device: uuid.UUID, md: Any) -> Any:
    api = devices_pb2_grpc.DeviceServiceStub(server.channel)
    return api.StreamDeviceEvents(
        devices_pb2.StreamDeviceEventsRequest(device_ids=[str(device)]), metadata=md
    )


def _command_updates(server: Server, device: uuid.UUID, md: Any) -> Any:
    api = commands_pb2_grpc.CommandServiceStub(server.channel)
    return api.StreamCommandUpdates(
        commands_pb2.StreamCommandUpdatesRequest(device_ids=[str(device)]), metadata=md
    )


def _alarm_events(server: Server, device: uuid.UUID, md: Any) -> Any:
    api = alarms_pb2_grpc.AlarmServiceStub(server.channel)
    return api.StreamAlarmEvents(
        alarms_pb2.StreamAlarmEventsRequest(device_ids=[str(device)]), metadata=md
    )


STREAMS = pytest.mark.parametrize(
    "open_call",
    [_device_events, _command_updates, _alarm_events],
    ids=["StreamDeviceEvents", "StreamCommandUpdates", "StreamAlarmEvents"],
)


async def _running(server: Server, account: Account, open_call: Any, device: uuid.UUID) -> Any:
    limits = server.running.limits
    assert limits is not None
    before = limits.streams.by_principal.get(account.user_id, 0)
    call = open_call(server, device, account.md)

    async def running() -> bool:
        return limits.streams.by_principal.get(account.user_id, 0) > before

    await async_wait_until(running, 30, "the stream's handler running")
    return call


@STREAMS
async def test_each_stream_ends_not_found_when_its_device_is_unassigned(
    server: Server, owner_conn: asyncpg.Connection, open_call: Any
) -> None:
    viewer, device = await _viewer_with_device(server, owner_conn)
    call = await _running(server, viewer, open_call, device)
    await _as_staff(
        owner_conn, "DELETE FROM user_device_assignments WHERE user_id = $1", viewer.user_id
    )
    code, details = await _ended_with(call)
    assert code is grpc.StatusCode.NOT_FOUND
    assert details["ErrorInfo"].reason == "ERROR_REASON_NOT_FOUND"


@STREAMS
async def test_each_stream_of_a_disabled_user_ends_unauthenticated(
    server: Server, owner_conn: asyncpg.Connection, open_call: Any
) -> None:
    viewer, device = await _viewer_with_device(server, owner_conn)
    call = await _running(server, viewer, open_call, device)
    await _as_staff(
        owner_conn, "UPDATE users SET status = 'disabled' WHERE id = $1", viewer.user_id
    )
    code, _ = await _ended_with(call)
    assert code is grpc.StatusCode.UNAUTHENTICATED


@STREAMS
async def test_each_stream_of_an_unchanged_caller_runs_on(
    server: Server, owner_conn: asyncpg.Connection, open_call: Any
) -> None:
    viewer, device = await _viewer_with_device(server, owner_conn)
    call = await _running(server, viewer, open_call, device)
    await asyncio.sleep(RECHECK_SECONDS * 3)  # three re-checks passed
    assert not call.done()
    call.cancel()
