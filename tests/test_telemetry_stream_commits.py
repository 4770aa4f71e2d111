"""StreamTelemetry follows commits, not reading times: a batch of older readings that commits
after a batch of newer ones is still streamed, and nothing is streamed twice."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf import timestamp_pb2

from lifebox.v1 import telemetry_pb2 as T
from lifebox.v1 import telemetry_pb2_grpc
from lifebox_grpc.ingest.consumer import Received
from lifebox_grpc.ingest.devices import DeviceDirectory
from lifebox_grpc.ingest.pipeline import Pipeline
from lifebox_grpc.native import Decoder
from lifebox_grpc.store.pool import tenant_transaction
from lifebox_grpc.store.telemetry_notices import (
    COMMITS_PER_NOTICE,
    Commit,
    decode_notice,
    encode_notices,
)
from lifebox_grpc.store.xact_snapshots import XactSnapshot
from lifebox_grpc.streams import metrics
from lifebox_grpc.streams.subscription import StreamOverflow, Subscription
from tests.helpers.grpc import Server, make_account, sign_in
from tests.helpers.ingest import register_fleet
from tests.helpers.services import Database
from tests.helpers.wait import async_wait_until

pytestmark = pytest.mark.timeout(120)
FIELDS = ["voltage_l1"]


@pytest.fixture
async def pipeline(database: Database) -> AsyncIterator[Pipeline]:
    """The ingest pipeline in-process, as the ingest role: each `process` is one batch
    transaction; facts are written only when the test flushes them."""
    pool = await asyncpg.create_pool(database.ingest_dsn, min_size=1, max_size=2)
    assert pool is not None
    try:
        yield Pipeline(pool, Decoder(), DeviceDirectory(), lambda messages: len(messages), 4096)
    finally:
        await pool.close()


# (client id, device id, serial, a base time in ms ten minutes ago) of a new one-device tenant
OneDevice = tuple[uuid.UUID, uuid.UUID, str, int]


@pytest.fixture
async def one_device(database: Database) -> OneDevice:
    fleet = await register_fleet(database.owner_dsn, 1)
    ((device, serial),) = fleet.devices
    return fleet.client_id, device, serial, (int(time.time()) - 600) * 1000


def batch(serial: str, times_ms: list[int]) -> list[Received]:
    payload = json.dumps([{"ts": t, "voltage_l1": float(t % 100_000)} for t in times_ms])
    now_us = time.time_ns() // 1000
    return [Received(1, 1, f"lifebox/v1/{serial}/telemetry", payload.encode(), now_us, 0)]


def ts_ms(ms: int) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromMilliseconds(ms)
    return out


async def read_exactly(call: Any, expected: int, timeout: float = 30) -> list[int]:
    """Times (ms) of the next ``expected`` streamed readings; fails if a message brings more."""
    got: list[int] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while len(got) < expected:
        message = await asyncio.wait_for(call.read(), deadline - loop.time())
        assert message is not grpc.aio.EOF
        got += [t // 1000 for t in message.series.time_micros]
    assert len(got) == expected, f"more readings than expected: {got}"
    return got


async def commit_and_read(
    pipeline: Pipeline, serial: str, times_ms: list[int], *streams: Any
) -> None:
    """One batch transaction, its facts written, then each stream sends exactly it."""
    await pipeline.process(batch(serial, times_ms))
    await pipeline.facts.flush()
    for stream in streams:
        assert await read_exactly(stream, len(times_ms)) == times_ms


async def listening(conn: asyncpg.Connection) -> bool | None:
    count = await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'lifebox-serve-listen'"
    )
    return True if count else None


async def open_streams(
    grpc_server: Server, owner_conn: asyncpg.Connection, client_id: uuid.UUID, device: uuid.UUID,
    start_ms: int,
) -> tuple[Any, Any]:  # fmt: skip
    """A stream from now on and one from ``start_ms``, both listening."""
    user = await sign_in(grpc_server, await make_account(owner_conn, "client", client_id))
    api = telemetry_pb2_grpc.TelemetryServiceStub(grpc_server.channel)
    live = api.StreamTelemetry(
        T.StreamTelemetryRequest(device_ids=[str(device)], fields=FIELDS), metadata=user.md
    )
    since = api.StreamTelemetry(
        T.StreamTelemetryRequest(
            device_ids=[str(device)], fields=FIELDS, start_time=ts_ms(start_ms)
        ),
        metadata=user.md,
    )
    await async_wait_until(lambda: listening(owner_conn), 30, "the streams' LISTEN connection")
    # The process's listener may be another stream's: let both handlers read their starting
    # points and subscribe.
    await asyncio.sleep(1)
    return live, since


async def test_older_readings_committed_after_newer_ones_are_streamed_once(
    one_device: OneDevice, grpc_server: Server, owner_conn: asyncpg.Connection, pipeline: Pipeline
) -> None:
    client_id, device, serial, base = one_device
    newer = [base + 10_000 + i * 1000 for i in range(5)]
    older = [base + i * 1000 for i in range(5)]
    newest = [base + 60_000]
    live, since = await open_streams(grpc_server, owner_conn, client_id, device, base)
    await commit_and_read(pipeline, serial, newer, live, since)
    # The older batch commits last: it is sent, after the newer one.
    await commit_and_read(pipeline, serial, older, live, since)
    # Nothing is sent again: the next reading each stream sends is the next commit's.
    await commit_and_read(pipeline, serial, newest, live, since)
    live.cancel()
    since.cancel()


async def test_a_commit_the_catch_up_saw_is_not_streamed_again(
    one_device: OneDevice, grpc_server: Server, owner_conn: asyncpg.Connection, pipeline: Pipeline
) -> None:
    client_id, device, serial, base = one_device
    first = [base + i * 1000 for i in range(3)]
    second = [base + 30_000, base + 31_000]
    # Committed, but its notification is held back until the catch-up has read it.
    await pipeline.process(batch(serial, first))
    live, since = await open_streams(grpc_server, owner_conn, client_id, device, base)
    assert await read_exactly(since, 3) == first
    await pipeline.facts.flush()
    await pipeline.process(batch(serial, second))
    await pipeline.facts.flush()
    assert await read_exactly(since, 2) == second
    # The live stream started after `first` committed; it never sends it.
    assert await read_exactly(live, 2) == second
    live.cancel()
    since.cancel()


def test_snapshot_sees_settled_and_finished_transactions_only() -> None:
    snapshot = XactSnapshot.parse("100:110:102,105")
    assert [x for x in (99, 101, 102, 105, 109, 110, 5_000) if snapshot.sees(x)] == [99, 101, 109]
    assert XactSnapshot.parse("7:7:") == XactSnapshot(7, 7, frozenset())


def test_notices_split_below_the_payload_limit_and_keep_commit_order() -> None:
    device, client = uuid.uuid4(), uuid.uuid4()
    big = 2**63 - 1
    commits = [Commit(big - i, -big, big) for i in range(COMMITS_PER_NOTICE * 2 + 1)]
    payloads = encode_notices(device, client, commits)
    assert len(payloads) == 3
    assert all(len(p.encode()) < 8000 for p in payloads)
    decoded = [decode_notice(p) for p in payloads]
    assert {d for d, _ in decoded} == {device}
    assert [c for _, cs in decoded for c in cs] == commits


class _FailingOnce:
    """A pool whose next acquire fails as a lost database would."""

    def __init__(self, pool: Any, error: Exception | None = None) -> None:
        self.pool = pool
        self.error = error or OSError("database unreachable")
        self.failed = False

    def acquire(self) -> Any:
        if not self.failed:
            self.failed = True
            raise self.error
        return self.pool.acquire()


@pytest.mark.parametrize(
    "error",
    [
        OSError("database unreachable"),
        FileNotFoundError("no socket while the server restarts"),
        # What asyncpg raises when COMMIT meets a connection the server is dropping.
        asyncpg.InternalClientError("cannot switch to state 15; another operation"),
    ],
)
async def test_a_batch_is_retried_after_a_lost_connection(
    one_device: OneDevice,
    owner_conn: asyncpg.Connection,
    pipeline: Pipeline,
    error: Exception,
) -> None:
    client_id, device, serial, base = one_device
    pool = pipeline.pool
    pipeline.pool = _FailingOnce(pool, error)  # type: ignore[assignment]
    await pipeline.process(batch(serial, [base, base + 1000]))
    assert pipeline.pool.failed  # type: ignore[attr-defined]
    async with tenant_transaction(owner_conn, client_id):
        count = await owner_conn.fetchval(
            "SELECT count(*) FROM telemetry_events WHERE device_id = $1", device
        )
    assert count == 2


async def test_a_failed_facts_write_does_not_delay_or_lose_the_commit_announcements(
    one_device: OneDevice, grpc_server: Server, owner_conn: asyncpg.Connection, pipeline: Pipeline
) -> None:
    client_id, device, serial, base = one_device
    newer, older = [base + 20_000, base + 21_000], [base + 1000]
    live, since = await open_streams(grpc_server, owner_conn, client_id, device, base)
    await pipeline.process(batch(serial, newer))
    flaky = _FailingOnce(pipeline.facts.pool)
    pipeline.facts.pool = flaky  # type: ignore[assignment]
    await pipeline.facts.flush()
    assert flaky.failed
    assert pipeline.facts.pending, "the unsent facts are kept"
    await pipeline.process(batch(serial, older))
    await pipeline.facts.flush()
    assert not pipeline.facts.pending
    assert await read_exactly(live, 3) == newer + older
    assert await read_exactly(since, 3) == newer + older
    live.cancel()
    since.cancel()


async def listener_pid(conn: asyncpg.Connection) -> int | None:
    pid = await conn.fetchval(
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'lifebox-serve-listen'"
    )
    return int(pid) if pid else None


async def test_streams_resynchronise_after_the_listener_connection_is_lost(
    database: Database,
    one_device: OneDevice,
    grpc_server: Server,
    owner_conn: asyncpg.Connection,
    pipeline: Pipeline,
) -> None:
    client_id, device, serial, base = one_device
    first, second, third = [base + 1000], [base + 2000, base + 3000], [base + 4000]
    live, since = await open_streams(grpc_server, owner_conn, client_id, device, base)
    await commit_and_read(pipeline, serial, first, live, since)
    old_pid = await listener_pid(owner_conn)
    superuser = await asyncpg.connect(database.superuser_dsn)
    try:
        assert await superuser.fetchval("SELECT pg_terminate_backend($1)", old_pid)
    finally:
        await superuser.close()

    async def replaced() -> bool | None:
        pid = await listener_pid(owner_conn)
        return True if pid and pid != old_pid else None

    await async_wait_until(replaced, 30, "a new LISTEN connection")
    await commit_and_read(pipeline, serial, second, live, since)
    await commit_and_read(pipeline, serial, third, live, since)
    live.cancel()
    since.cancel()


async def test_subscription_hands_out_items_in_order_around_a_resync() -> None:
    sub: Subscription[int] = Subscription("test", 3, resync=True)
    first = await sub.wait(None)
    assert (first.resync, first.items) == (True, []), "a stream starts with its catch-up"
    sub.add(1)
    sub.mark_resync()
    sub.add(2)
    sub.add(3)
    before = await sub.wait(None)
    assert (before.resync, before.items) == (True, [1])
    after = await sub.wait(None)
    assert (after.resync, after.items) == (False, [2, 3])
    assert (await sub.wait(0.01)).resync, "no news within the timeout: a poll"
    assert sub.held == 0


async def test_a_full_subscription_ends_its_stream_and_is_counted() -> None:
    counted = metrics.STREAM_OVERFLOWS.labels("test")._value.get()
    sub: Subscription[int] = Subscription("test", 3, weigh=lambda n: n)
    sub.add(2)
    sub.add(1)
    assert sub.held == 3
    assert not sub.overflowed
    sub.add(1)
    assert sub.overflowed
    assert sub.held == 0, "what it held is let go at once"
    with pytest.raises(StreamOverflow) as raised:
        await sub.wait(None)
    assert raised.value.subject == "stream:test:buffer"
    assert metrics.STREAM_OVERFLOWS.labels("test")._value.get() == counted + 1
