"""Per-caller limits: concurrent calls, expensive calls and streams per principal and per
server, the pool-acquire timeout, and one greedy viewer that cannot starve another tenant."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf import duration_pb2, empty_pb2, json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lifebox.v1 import auth_pb2, devices_pb2, devices_pb2_grpc, telemetry_pb2
from lifebox_grpc.auth.permissions import Access, Rule
from lifebox_grpc.interceptors.limits import HEAVY_METHODS, CallLimits
from lifebox_grpc.runtime.mosquitto import EmbeddedMosquitto
from lifebox_grpc.services.registry import method_names
from lifebox_grpc.store.pool import tenant_transaction
from tests.helpers import factories
from tests.helpers.grpc import (
    PASSWORD,
    Account,
    Server,
    close_server,
    error_of,
    make_account,
    open_server,
    server_settings,
    sign_in,
)
from tests.helpers.services import Database
from tests.helpers.wait import async_wait_until

pytestmark = pytest.mark.timeout(180)

PROBE = "lifebox.test.Limits"
REPO = Path(__file__).resolve().parents[1]
_held: dict[str, Any] = {}


async def _hold(request: empty_pb2.Empty, context: Any) -> empty_pb2.Empty:
    await _held["release"].wait()
    return empty_pb2.Empty()


async def _hold_connection(request: empty_pb2.Empty, context: Any) -> empty_pb2.Empty:
    async with _held["pool"].acquire():
        _held["taken"].set()
        await _held["release"].wait()
    return empty_pb2.Empty()


async def _watch(request: empty_pb2.Empty, context: Any) -> AsyncIterator[empty_pb2.Empty]:
    yield empty_pb2.Empty()
    await _held["release"].wait()


def _unary(behavior: Any) -> grpc.RpcMethodHandler:
    return grpc.unary_unary_rpc_method_handler(
        behavior,
        request_deserializer=empty_pb2.Empty.FromString,
        response_serializer=empty_pb2.Empty.SerializeToString,
    )


PROBE_HANDLERS = grpc.method_handlers_generic_handler(
    PROBE,
    {
        "Hold": _unary(_hold),
        "HoldHeavy": _unary(_hold),
        "HoldConnection": _unary(_hold_connection),
        "Watch": grpc.unary_stream_rpc_method_handler(
            _watch,
            request_deserializer=empty_pb2.Empty.FromString,
            response_serializer=empty_pb2.Empty.SerializeToString,
        ),
    },
)
_SIGNED_IN = Rule(Access.AUTHENTICATED)
PROBE_RULES = {
    f"/{PROBE}/Hold": _SIGNED_IN,
    f"/{PROBE}/HoldHeavy": _SIGNED_IN,
    f"/{PROBE}/HoldConnection": Rule(Access.PUBLIC),
    f"/{PROBE}/Watch": _SIGNED_IN,
}


def _probe(server: Server, name: str) -> Any:
    kind = server.channel.unary_stream if name == "Watch" else server.channel.unary_unary
    return kind(
        f"/{PROBE}/{name}",
        request_serializer=empty_pb2.Empty.SerializeToString,
        response_deserializer=empty_pb2.Empty.FromString,
    )


async def _limited_server(database: Database, broker: EmbeddedMosquitto, **limits: Any) -> Server:
    _held["release"] = asyncio.Event()
    _held["taken"] = asyncio.Event()
    server = await open_server(
        server_settings(database, broker, **limits),
        extra_handlers=[PROBE_HANDLERS],
        extra_rules=PROBE_RULES,
        extra_heavy_methods=frozenset({f"/{PROBE}/HoldHeavy"}),
    )
    _held["pool"] = server.running.pool
    return server


@pytest.fixture
async def limited(database: Database, broker: EmbeddedMosquitto) -> AsyncIterator[Server]:
    server = await _limited_server(
        database,
        broker,
        grpc_max_calls_per_principal=2,
        grpc_max_calls_per_server=3,
        grpc_max_heavy_calls_per_principal=1,
        grpc_max_heavy_calls_per_server=2,
        grpc_max_streams_per_principal=2,
        grpc_max_streams_per_server=3,
    )
    yield server
    _held["release"].set()
    await close_server(server)


def _limits(server: Server) -> CallLimits:
    assert server.running.limits is not None
    return server.running.limits


async def _users(server: Server, conn: asyncpg.Connection, count: int) -> list[Account]:
    """``count`` client administrators, each of a tenant of their own."""
    return [
        await sign_in(server, await make_account(conn, "client", await factories.make_client(conn)))
        for _ in range(count)
    ]


async def _refused(call: Any) -> tuple[str, int]:
    """The QuotaFailure subject and RetryInfo seconds of a RESOURCE_EXHAUSTED call."""
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call
    code, details = error_of(refused.value)
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED, refused.value.details()
    (violation,) = details["QuotaFailure"].violations
    return violation.subject, details["RetryInfo"].retry_delay.seconds


async def test_heavy_methods_are_methods_the_server_offers() -> None:
    assert set(HEAVY_METHODS) <= set(method_names())


async def test_calls_past_the_principal_or_server_bound_are_resource_exhausted(
    limited: Server, owner_conn: asyncpg.Connection
) -> None:
    a, b, c = await _users(limited, owner_conn, 3)
    limits = _limits(limited)
    hold = _probe(limited, "Hold")
    running = [asyncio.ensure_future(hold(empty_pb2.Empty(), metadata=a.md)) for _ in range(2)]

    async def a_holds_two() -> bool:
        return limits.calls.by_principal.get(a.user_id) == 2

    await async_wait_until(a_holds_two, 30, "two calls of one principal in flight")
    assert await _refused(hold(empty_pb2.Empty(), metadata=a.md)) == ("principal:calls", 1)

    # Another principal is not held back by the first one's bound...
    running.append(asyncio.ensure_future(hold(empty_pb2.Empty(), metadata=b.md)))

    async def three_in_flight() -> bool:
        return limits.calls.total == 3

    await async_wait_until(three_in_flight, 30, "three calls in flight")
    # ...but the server's bound holds for everyone, a public call included.
    assert await _refused(hold(empty_pb2.Empty(), metadata=c.md)) == ("server:calls", 1)
    assert await _refused(
        limited.auth.Login(auth_pb2.LoginRequest(email=c.email, password=PASSWORD))
    ) == ("server:calls", 1)
    # Health checks are never limited.
    health = health_pb2_grpc.HealthStub(limited.channel)
    await health.Check(health_pb2.HealthCheckRequest(), timeout=5)

    _held["release"].set()
    await asyncio.gather(*running)
    assert (limits.calls.total, limits.calls.by_principal) == (0, {})
    await hold(empty_pb2.Empty(), metadata=c.md)


async def test_expensive_calls_have_a_bound_of_their_own(
    limited: Server, owner_conn: asyncpg.Connection
) -> None:
    (a,) = await _users(limited, owner_conn, 1)
    limits = _limits(limited)
    heavy = asyncio.ensure_future(_probe(limited, "HoldHeavy")(empty_pb2.Empty(), metadata=a.md))

    async def one_heavy() -> bool:
        return limits.heavy.by_principal.get(a.user_id) == 1

    await async_wait_until(one_heavy, 30, "an expensive call in flight")
    subject, _ = await _refused(_probe(limited, "HoldHeavy")(empty_pb2.Empty(), metadata=a.md))
    assert subject == "principal:expensive_calls"
    # A cheap call of the same principal still runs beside it.
    cheap = asyncio.ensure_future(_probe(limited, "Hold")(empty_pb2.Empty(), metadata=a.md))

    async def two_calls() -> bool:
        return limits.calls.by_principal.get(a.user_id) == 2

    await async_wait_until(two_calls, 30, "the cheap call in flight too")
    _held["release"].set()
    await asyncio.gather(heavy, cheap)
    assert (limits.heavy.total, limits.calls.total) == (0, 0)


async def test_streams_past_the_bound_are_refused_and_a_closed_one_frees_its_place(
    limited: Server, owner_conn: asyncpg.Connection
) -> None:
    a, b = await _users(limited, owner_conn, 2)
    limits = _limits(limited)
    watch = _probe(limited, "Watch")
    open_streams = [watch(empty_pb2.Empty(), metadata=a.md) for _ in range(2)]
    for stream in open_streams:
        await stream.read()  # its first message: the stream is open
    assert await _refused(watch(empty_pb2.Empty(), metadata=a.md).read()) == (
        "principal:streams",
        1,
    )
    # Streams do not count against unary calls: a still makes them.
    await limited.auth.GetMe(auth_pb2.GetMeRequest(), metadata=a.md)

    open_streams[0].cancel()

    async def one_left() -> bool:
        return limits.streams.by_principal.get(a.user_id) == 1

    await async_wait_until(one_left, 30, "the cancelled stream's place freed")
    open_streams[0] = watch(empty_pb2.Empty(), metadata=a.md)
    await open_streams[0].read()
    # b opens one: three open, the server's bound, which holds for b too.
    open_streams.append(watch(empty_pb2.Empty(), metadata=b.md))
    await open_streams[-1].read()
    assert await _refused(watch(empty_pb2.Empty(), metadata=b.md).read()) == ("server:streams", 1)
    _held["release"].set()
    for stream in open_streams:
        assert await stream.read() is grpc.aio.EOF
    await async_wait_until(
        lambda: _true(limits.streams.total == 0), 30, "every stream's place freed"
    )


async def _true(value: bool) -> bool:
    return value


async def test_a_call_that_finds_no_free_connection_in_time_is_resource_exhausted(
    database: Database, broker: EmbeddedMosquitto, owner_conn: asyncpg.Connection
) -> None:
    server = await _limited_server(
        database, broker, db_pool_min=1, db_pool_max=1, db_pool_acquire_timeout_seconds=0.2
    )
    try:
        (a,) = await _users(server, owner_conn, 1)
        holder = asyncio.ensure_future(_probe(server, "HoldConnection")(empty_pb2.Empty()))
        await asyncio.wait_for(_held["taken"].wait(), 30)
        subject, retry = await _refused(server.auth.GetMe(auth_pb2.GetMeRequest(), metadata=a.md))
        assert (subject, retry) == ("server:database_connections", 1)
        _held["release"].set()
        await holder
        await server.auth.GetMe(auth_pb2.GetMeRequest(), metadata=a.md)
    finally:
        _held["release"].set()
        await close_server(server)


# -- one greedy viewer against another tenant ---------------------------------------------------

FLOOD_DEVICES = 10
FLOOD_BUCKETS = 10_000
FLOOD_FUNCTIONS = ("AVG", "MIN", "MAX", "FIRST", "LAST")


async def _greedy_viewer(
    server: Server, conn: asyncpg.Connection
) -> tuple[Account, list[str], datetime]:
    """A viewer assigned ten devices with a reading a minute for 10,000 minutes each."""
    client = await factories.make_client(conn)
    viewer = await make_account(conn, "viewer", client)
    devices = [(await factories.make_device(conn, client))[0] for _ in range(FLOOD_DEVICES)]
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=7)
    async with tenant_transaction(conn, None, staff=True):
        await conn.execute(
            "INSERT INTO user_device_assignments (user_id, device_id, client_id) "
            "SELECT $1, d, $2 FROM unnest($3::uuid[]) AS d",
            viewer.user_id,
            client,
            devices,
        )
        await conn.execute(
            "INSERT INTO telemetry_events (time, device_id, client_id, voltage_l1) "
            "SELECT $3::timestamptz + i * interval '1 minute', d, $2, i "
            "FROM unnest($1::uuid[]) AS d, generate_series(0, $4 - 1) AS i",
            devices,
            client,
            start,
            FLOOD_BUCKETS,
        )
    return await sign_in(server, viewer), [str(d) for d in devices], start


async def _stderr(process: asyncio.subprocess.Process) -> str:
    assert process.stderr is not None
    if process.returncode is None:
        process.kill()
    return (await process.stderr.read()).decode(errors="replace")[-3000:]


async def test_a_greedy_viewer_cannot_make_another_tenants_calls_miss_a_2s_deadline(
    database: Database, broker: EmbeddedMosquitto, owner_conn: asyncpg.Connection
) -> None:
    server = await open_server(server_settings(database, broker))  # the default limits
    flood: asyncio.subprocess.Process | None = None
    try:
        viewer, device_ids, start = await _greedy_viewer(server, owner_conn)
        other = await sign_in(
            server,
            await make_account(owner_conn, "client", await factories.make_client(owner_conn)),
        )
        assert other.client_id is not None
        device, _ = await factories.make_device(owner_conn, other.client_id)
        # 10 devices x 10,000 buckets x 5 aggregations: the largest call the cap allows.
        assert FLOOD_DEVICES * FLOOD_BUCKETS * len(FLOOD_FUNCTIONS) == (
            server.settings.telemetry_max_cells_per_call
        )
        aggregate = telemetry_pb2.AggregateTelemetryRequest(
            device_ids=device_ids,
            bucket_width=duration_pb2.Duration(seconds=60),
            aggregations=[
                telemetry_pb2.Aggregation(
                    field="voltage_l1",
                    function=telemetry_pb2.AggregateFunction.Value(f"AGGREGATE_FUNCTION_{f}"),
                )
                for f in FLOOD_FUNCTIONS
            ],
        )
        aggregate.start_time.FromDatetime(start)
        aggregate.end_time.FromDatetime(start + timedelta(minutes=FLOOD_BUCKETS))
        spec = {
            "target": f"127.0.0.1:{server.running.grpc_port}",
            "token": viewer.access_token,
            "aggregate": json_format.MessageToDict(aggregate),
            "stream": {"deviceIds": device_ids, "fields": ["voltage_l1"]},
            "aggregates": 20,
            "streams": 500,
            "max_message_bytes": server.settings.grpc_max_message_bytes,
        }
        flood = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.helpers.flood", json.dumps(spec),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, cwd=REPO,
        )  # fmt: skip
        assert flood.stdout is not None
        assert flood.stdin is not None
        for expected in ("streams-answered", "aggregate-done"):
            line = await asyncio.wait_for(flood.stdout.readline(), 120)
            assert line.decode().strip() == expected, await _stderr(flood)

        # While the flood runs: another tenant signs in and reads a device, every time
        # within a 2 s deadline.
        devices_api = devices_pb2_grpc.DeviceServiceStub(server.channel)
        for _ in range(10):
            signed_in = await server.auth.Login(
                auth_pb2.LoginRequest(email=other.email, password=PASSWORD), timeout=2
            )
            md = (("authorization", f"Bearer {signed_in.tokens.access_token}"),)
            got = await devices_api.GetDevice(
                devices_pb2.GetDeviceRequest(id=str(device)), metadata=md, timeout=2
            )
            assert got.device.id == str(device)
        assert flood.returncode is None, "the flood ran throughout"

        flood.stdin.close()
        summary = json.loads((await asyncio.wait_for(flood.stdout.readline(), 120)).decode())
        await flood.wait()
        outcomes = summary["outcomes"]
        settings = server.settings
        held = settings.grpc_max_streams_per_principal
        assert outcomes.get("stream RESOURCE_EXHAUSTED") == 500 - held
        assert outcomes.get("aggregate OK", 0) >= 1
        assert outcomes.get("aggregate RESOURCE_EXHAUSTED", 0) >= 1
        assert set(outcomes) <= {
            "aggregate OK",
            "aggregate RESOURCE_EXHAUSTED",
            "stream RESOURCE_EXHAUSTED",
        }, outcomes
        assert summary["quota_details"], "a RESOURCE_EXHAUSTED without QuotaFailure/RetryInfo"
    finally:
        if flood is not None and flood.returncode is None:
            flood.kill()
            await flood.wait()
        await close_server(server)
