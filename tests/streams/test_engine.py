"""The stream engine: each announced commit read once per process for all its streams, a
slow client ending with RESOURCE_EXHAUSTED without holding back a fast one, and the
listener's release on purpose not logged as a loss."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import grpc
import pytest

from lifebox.v1 import telemetry_pb2 as T
from lifebox.v1 import telemetry_pb2_grpc
from lifebox_grpc.ingest.consumer import Received
from lifebox_grpc.ingest.devices import DeviceDirectory
from lifebox_grpc.ingest.pipeline import Pipeline
from lifebox_grpc.native import Decoder
from lifebox_grpc.runtime.mosquitto import EmbeddedMosquitto
from lifebox_grpc.streams import limits, metrics
from lifebox_grpc.streams.listener import APPLICATION_NAME
from tests.helpers.grpc import (
    Server,
    close_server,
    error_of,
    make_account,
    open_server,
    server_settings,
    sign_in,
)
from tests.helpers.ingest import register_fleet
from tests.helpers.services import Database
from tests.helpers.wait import async_wait_until

pytestmark = pytest.mark.timeout(180)
BUFFER = 2_000
PER_MESSAGE = 50


@pytest.fixture(scope="module")
async def server(database: Database, broker: EmbeddedMosquitto) -> AsyncIterator[Server]:
    """A server whose streams may queue at most BUFFER rows."""
    running = await open_server(server_settings(database, broker, stream_buffer_items=BUFFER))
    yield running
    await close_server(running)
    limits.configure(limits.DEFAULT_BUFFER_ITEMS)


@pytest.fixture
async def pipeline(database: Database) -> AsyncIterator[Pipeline]:
    pool = await asyncpg.create_pool(database.ingest_dsn, min_size=1, max_size=2)
    assert pool is not None
    try:
        yield Pipeline(pool, Decoder(), DeviceDirectory(), lambda messages: len(messages), 4096)
    finally:
        await pool.close()


def messages(serial: str, times_ms: list[int]) -> list[Received]:
    """Readings of one device, PER_MESSAGE to a message."""
    now_us = time.time_ns() // 1000
    out = []
    for i in range(0, len(times_ms), PER_MESSAGE):
        payload = json.dumps(
            [{"ts": t, "voltage_l1": 230.0} for t in times_ms[i : i + PER_MESSAGE]]
        )
        out.append(Received(i, 1, f"lifebox/v1/{serial}/telemetry", payload.encode(), now_us, 0))
    return out


async def listening(conn: asyncpg.Connection) -> bool | None:
    count = await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", APPLICATION_NAME
    )
    return True if count else None


async def open_stream(server: Server, md: Any, device: uuid.UUID, channel: Any = None) -> Any:
    api = telemetry_pb2_grpc.TelemetryServiceStub(channel or server.channel)
    return api.StreamTelemetry(
        T.StreamTelemetryRequest(device_ids=[str(device)], fields=["voltage_l1"]), metadata=md
    )


async def read_times(call: Any, expected: int, timeout: float = 60) -> list[int]:
    got: list[int] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(got) < expected:
        message = await asyncio.wait_for(call.read(), deadline - loop.time())
        assert message is not grpc.aio.EOF
        got += list(message.series.time_micros)
    return got


async def drain(call: Any, into: list[int]) -> None:
    """Times of a stream's messages until it ends."""
    while (message := await asyncio.wait_for(call.read(), 30)) is not grpc.aio.EOF:
        into += list(message.series.time_micros)


async def one_device(database: Database, owner_conn: asyncpg.Connection, server: Server) -> Any:
    fleet = await register_fleet(database.owner_dsn, 1)
    ((device, serial),) = fleet.devices
    user = await sign_in(server, await make_account(owner_conn, "client", fleet.client_id))
    return device, serial, user, (int(time.time()) - 3000) * 1000


async def test_a_slow_client_ends_resource_exhausted_and_a_fast_one_gets_everything(
    database: Database, server: Server, owner_conn: asyncpg.Connection, pipeline: Pipeline
) -> None:
    device, serial, user, base = await one_device(database, owner_conn, server)
    # The slow client's transport takes little before it stops reading: the server-side
    # buffer, not gRPC's windows, is what fills.
    small = grpc.aio.insecure_channel(
        f"127.0.0.1:{server.running.grpc_port}",
        options=[("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 16_384)],
    )
    overflows = metrics.STREAM_OVERFLOWS.labels("telemetry")._value.get()
    fast = await open_stream(server, user.md, device)
    slow = await open_stream(server, user.md, device, small)
    await async_wait_until(lambda: listening(owner_conn), 30, "the streams' listener")
    await asyncio.sleep(0.5)  # both handlers subscribed
    commits, per_commit = 40, 500
    times = [base + i for i in range(commits * per_commit)]
    fast_reader = asyncio.create_task(read_times(fast, len(times)))
    for i in range(commits):
        await pipeline.process(messages(serial, times[i * per_commit : (i + 1) * per_commit]))
        await pipeline.facts.flush()
    got = await fast_reader
    assert got == [t * 1000 for t in times], "the fast stream: every reading once, in order"
    # The slow one fell more than BUFFER rows behind: what it sent is a prefix, then it ends.
    received: list[int] = []
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        await drain(slow, received)
    code, details = error_of(ended.value)
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert details["QuotaFailure"].violations[0].subject == "stream:telemetry:buffer"
    assert len(received) < len(times)
    assert received == [t * 1000 for t in times[: len(received)]]
    assert metrics.STREAM_OVERFLOWS.labels("telemetry")._value.get() == overflows + 1
    fast.cancel()
    await small.close()


async def test_each_commit_is_read_once_for_all_the_streams_of_a_process(
    database: Database, server: Server, owner_conn: asyncpg.Connection, pipeline: Pipeline
) -> None:
    device, serial, user, base = await one_device(database, owner_conn, server)
    streams = [await open_stream(server, user.md, device) for _ in range(5)]
    await async_wait_until(lambda: listening(owner_conn), 30, "the streams' listener")
    await asyncio.sleep(0.5)
    reads = metrics.COMMIT_READS._value.get()
    commits = 3
    for i in range(commits):
        times = [base + i * 10 + j for j in range(10)]
        await pipeline.process(messages(serial, times))
        await pipeline.facts.flush()
        for stream in streams:
            assert await read_times(stream, 10) == [t * 1000 for t in times]
    # One statement per commit here (each was read before the next came), not one per stream.
    assert metrics.COMMIT_READS._value.get() - reads == commits
    for stream in streams:
        stream.cancel()


async def test_releasing_the_listener_on_purpose_is_not_logged_as_a_loss(
    database: Database,
    server: Server,
    owner_conn: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    device, _serial, user, _base = await one_device(database, owner_conn, server)

    async def released() -> bool | None:
        return None if await listening(owner_conn) else True

    # Earlier tests' streams closed: the stream below is the only one.
    await async_wait_until(released, 30, "the earlier streams' listener released")
    caplog.set_level(logging.INFO, logger="lifebox_grpc.streams.listener")
    stream = await open_stream(server, user.md, device)
    await async_wait_until(lambda: listening(owner_conn), 30, "the stream's listener")
    await asyncio.sleep(0.5)
    stream.cancel()
    await async_wait_until(released, 30, "the listener released")
    await asyncio.sleep(0.2)
    messages_logged = [r.getMessage() for r in caplog.records]
    assert any("released" in m for m in messages_logged)
    assert not any("lost" in m for m in messages_logged)
