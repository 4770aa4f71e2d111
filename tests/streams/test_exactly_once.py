"""Under load, with two ingest workers and two `lifebox serve` processes: every stream of
either process sends each committed reading exactly once, and the live streams of both
processes send each device's readings in the same order (the order the commits were
announced, which every listener sees alike)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import defaultdict
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf import timestamp_pb2

from lifebox.v1 import auth_pb2, auth_pb2_grpc, telemetry_pb2_grpc
from lifebox.v1 import telemetry_pb2 as T
from lifebox_grpc.loadgen.run import LoadPlan, run_loadgen
from lifebox_grpc.runtime.mosquitto import EmbeddedMosquitto
from lifebox_grpc.store.pool import tenant_transaction
from tests.helpers.grpc import PASSWORD, make_account
from tests.helpers.ingest import IngestProcess, register_fleet
from tests.helpers.processes import serve_process
from tests.helpers.services import TEST_PUBLISHER, Database

pytestmark = pytest.mark.timeout(300)
SIGNING_KEY = "streams-exactly-once-" + "k" * 40
DEVICES = 10
MESSAGES = 3_000  # of 4 readings each: 12,000 readings


async def collect(call: Any, into: dict[uuid.UUID, list[int]]) -> None:
    with contextlib.suppress(grpc.aio.AioRpcError, asyncio.CancelledError):
        async for message in call:
            into[uuid.UUID(message.series.device_id)] += list(message.series.time_micros)


async def stored_times(database: Database, client_id: uuid.UUID) -> dict[uuid.UUID, list[int]]:
    conn = await asyncpg.connect(database.owner_dsn)
    try:
        async with tenant_transaction(conn, client_id):
            rows = await conn.fetch(
                "SELECT device_id, (extract(epoch FROM time) * 1000000)::int8 AS t "
                "FROM telemetry_events WHERE client_id = $1",
                client_id,
            )
    finally:
        await conn.close()
    out: dict[uuid.UUID, list[int]] = defaultdict(list)
    for row in rows:
        out[row["device_id"]].append(row["t"])
    return out


async def test_every_stream_sends_each_reading_once_with_two_workers_and_two_servers(
    database: Database, broker: EmbeddedMosquitto, owner_conn: asyncpg.Connection
) -> None:
    fleet = await register_fleet(database.owner_dsn, DEVICES)
    ids = [d for d, _ in fleet.devices]
    serials = [s for _, s in fleet.devices]
    account = await make_account(owner_conn, "client", fleet.client_id)
    workers = [IngestProcess(database, broker.url) for _ in range(2)]
    with contextlib.ExitStack() as stack:
        for worker in workers:
            worker.start()
            # Its persistent session would keep taking a share of later tests' telemetry.
            stack.callback(worker.forget_session, broker.port)
            stack.callback(worker.stop)
        addresses = [
            stack.enter_context(serve_process(database, broker, SIGNING_KEY)) for _ in range(2)
        ]
        channels = [grpc.aio.insecure_channel(a) for a in addresses]
        start = timestamp_pb2.Timestamp()
        start.GetCurrentTime()
        start.FromSeconds(start.seconds - 60)
        streams: list[tuple[str, dict[uuid.UUID, list[int]]]] = []
        tasks = []
        for n, channel in enumerate(channels):
            login = await auth_pb2_grpc.AuthServiceStub(channel).Login(
                auth_pb2.LoginRequest(email=account.email, password=PASSWORD), timeout=10
            )
            md = (("authorization", f"Bearer {login.tokens.access_token}"),)
            api = telemetry_pb2_grpc.TelemetryServiceStub(channel)
            for kind in ("live", "since"):
                request = T.StreamTelemetryRequest(
                    device_ids=[str(d) for d in ids], fields=["voltage_l1"]
                )
                if kind == "since":
                    request.start_time.CopyFrom(start)
                got: dict[uuid.UUID, list[int]] = defaultdict(list)
                streams.append((f"serve {n} {kind}", got))
                tasks.append(
                    asyncio.create_task(collect(api.StreamTelemetry(request, metadata=md), got))
                )
        await asyncio.sleep(3)  # every stream subscribed
        plan = LoadPlan(
            broker.url_for(TEST_PUBLISHER), serials, per_message=4, duration_s=None,
            messages=MESSAGES,
        )  # fmt: skip
        report = await asyncio.to_thread(run_loadgen, plan)
        assert report.messages == MESSAGES

        expected: dict[uuid.UUID, list[int]] = {}

        async def all_delivered() -> bool:
            nonlocal expected
            expected = await stored_times(database, fleet.client_id)
            total = sum(len(v) for v in expected.values())
            return total == MESSAGES * 4 and all(
                sum(len(v) for v in got.values()) >= total for _, got in streams
            )

        loop = asyncio.get_running_loop()
        deadline = loop.time() + 120
        while not await all_delivered():
            assert loop.time() < deadline, [
                (name, sum(len(v) for v in got.values())) for name, got in streams
            ]
            await asyncio.sleep(0.5)
        await asyncio.sleep(1)  # anything sent twice would have come by now
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for channel in channels:
            await channel.close()
    for name, got in streams:
        for device in ids:
            assert sorted(got[device]) == sorted(expected[device]), f"{name}: {device}"
            assert len(set(got[device])) == len(got[device]), f"{name} sent a reading twice"
    # The live streams of both processes follow the announcements in the same order.
    (_, live0), (_, live1) = streams[0], streams[2]
    for device in ids:
        assert live0[device] == live1[device]
