"""A command's lifecycle end to end: the API, a real `lifebox dispatch` subprocess on its own
role, a real ingest worker applying acks, and simulated devices on the real broker."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import grpc
import pytest

from lifebox.v1 import commands_pb2, commands_pb2_grpc
from lifebox_grpc.runtime.mosquitto import EmbeddedMosquitto
from lifebox_grpc.store.pool import tenant_transaction
from tests.helpers import factories
from tests.helpers.commands import (
    broker_url,
    dispatch_dsn,
    drop_dispatch_role,
    running_dispatcher,
    send,
    simulated_devices,
    statuses,
    trail,
)
from tests.helpers.grpc import Server, make_tenant
from tests.helpers.ingest import IngestProcess, running_ingest
from tests.helpers.services import Database
from tests.helpers.wait import async_wait_until

FAST = {"LIFEBOX_COMMANDS_RETRY_INTERVAL_SECONDS": "30", "LIFEBOX_DISPATCH_POLL_SECONDS": "0.2"}
FINAL = {"completed", "failed", "expired", "cancelled"}


@pytest.fixture(scope="module")
def ingest(database: Database, broker: EmbeddedMosquitto) -> Iterator[IngestProcess]:
    with running_ingest(
        database, broker_url(broker, "lifebox-ingest"), broker.port, LIFEBOX_INGEST_BATCH_MS="5"
    ) as worker:
        yield worker


@pytest.fixture(scope="module")
async def dsn(database: Database) -> AsyncIterator[str]:
    """The dispatcher's own role, for this module's tests only."""
    yield await dispatch_dsn(database)
    await drop_dispatch_role(database)


@pytest.fixture
async def staff(database: Database) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database.owner_dsn)
    yield conn
    await conn.close()


async def _wait_statuses(
    conn: asyncpg.Connection, client_id: uuid.UUID, done: set[str], count: int, timeout: float
) -> dict[uuid.UUID, str]:
    async def ready() -> dict[uuid.UUID, str]:
        now = await statuses(conn, client_id)
        return now if len(now) == count and all(s in done for s in now.values()) else {}

    return await async_wait_until(ready, timeout, f"{count} commands in {sorted(done)}")


async def test_a_sent_command_reaches_its_device_exactly_and_completes_with_its_full_trail(
    grpc_server: Server,
    staff: asyncpg.Connection,
    broker: EmbeddedMosquitto,
    ingest: IngestProcess,
    dsn: str,
) -> None:
    tenant = await make_tenant(grpc_server, staff)
    device, serial = await factories.make_device(staff, tenant.client_id)
    stub = commands_pb2_grpc.CommandServiceStub(grpc_server.channel)
    with (
        simulated_devices(broker, [serial]) as devices,
        running_dispatcher(dsn, broker_url(broker, "lifebox-dispatch"), env=FAST),
    ):
        reply = await stub.SendCommand(
            commands_pb2.SendCommandRequest(
                device_id=str(device), template_code="reboot", idempotency_key="k1"
            ),
            metadata=tenant.users["client"].md,
        )
        command_id = uuid.UUID(reply.command.id)
        await _wait_statuses(staff, tenant.client_id, {"completed"}, 1, 30)
    (got,) = devices.received
    assert got.serial == serial
    assert got.command_id == str(command_id)
    assert got.payload["id"] == str(command_id)
    assert got.payload["command"] == "reboot"
    assert got.payload["parameters"] == {"delay_s": 0}  # the template's default
    assert got.payload["attempt"] == 1
    assert got.correlation_data == str(command_id).encode()
    assert got.response_topic == f"lifebox/v1/{serial}/commands/{command_id}/ack"
    assert got.expiry is not None
    assert 0 < got.expiry <= 300
    assert await trail(staff, tenant.client_id, command_id) == [
        (None, "pending", "user"),
        ("pending", "sent", "system"),
        ("sent", "delivered", "device"),
        ("delivered", "acknowledged", "device"),
        ("acknowledged", "completed", "device"),
    ]
    final = await stub.GetCommand(
        commands_pb2.GetCommandRequest(id=str(command_id)), metadata=tenant.users["client"].md
    )
    assert final.command.status == commands_pb2.COMMAND_STATUS_COMPLETED
    assert dict(final.command.result) == {"ok": True, "command": "reboot"}
    # The same key again: the first command, never a second one.
    again = await stub.SendCommand(
        commands_pb2.SendCommandRequest(
            device_id=str(device), template_code="reboot", idempotency_key="k1"
        ),
        metadata=tenant.users["client"].md,
    )
    assert again.command.id == str(command_id)
    assert len(await statuses(staff, tenant.client_id)) == 1


async def test_a_pending_command_can_be_cancelled_and_a_published_one_cannot(
    grpc_server: Server,
    staff: asyncpg.Connection,
    broker: EmbeddedMosquitto,
    ingest: IngestProcess,
    dsn: str,
) -> None:
    tenant = await make_tenant(grpc_server, staff)
    device, serial = await factories.make_device(staff, tenant.client_id)
    stub = commands_pb2_grpc.CommandServiceStub(grpc_server.channel)
    md = tenant.users["client"].md
    first = await stub.SendCommand(
        commands_pb2.SendCommandRequest(device_id=str(device), template_code="ping"), metadata=md
    )
    cancelled = await stub.CancelCommand(
        commands_pb2.CancelCommandRequest(id=first.command.id), metadata=md
    )
    assert cancelled.command.status == commands_pb2.COMMAND_STATUS_CANCELLED
    with pytest.raises(grpc.aio.AioRpcError) as again:
        await stub.CancelCommand(
            commands_pb2.CancelCommandRequest(id=first.command.id), metadata=md
        )
    assert again.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    second = await stub.SendCommand(
        commands_pb2.SendCommandRequest(device_id=str(device), template_code="ping"), metadata=md
    )
    with (
        simulated_devices(broker, [serial], acks=()) as devices,
        running_dispatcher(dsn, broker_url(broker, "lifebox-dispatch"), env=FAST),
    ):

        async def received() -> list[str]:
            return devices.ids()

        await async_wait_until(received, 30, "the second command received")
        with pytest.raises(grpc.aio.AioRpcError) as late:
            await stub.CancelCommand(
                commands_pb2.CancelCommandRequest(id=second.command.id), metadata=md
            )
    assert late.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "cannot be recalled" in (late.value.details() or "")
    assert devices.ids() == [second.command.id]  # the cancelled one was never published


async def test_an_unanswered_command_is_republished_with_its_id_then_expires(
    database: Database,
    staff: asyncpg.Connection,
    broker: EmbeddedMosquitto,
    ingest: IngestProcess,
    dsn: str,
) -> None:
    client = await factories.make_client(staff)
    device, serial = await factories.make_device(staff, client)
    app = await asyncpg.connect(database.app_dsn)
    try:
        command = await send(app, client, device, "ping", timeout_s=4)
        env = {**FAST, "LIFEBOX_COMMANDS_RETRY_INTERVAL_SECONDS": "0.5"}
        with (
            simulated_devices(broker, [serial], acks=()) as devices,
            running_dispatcher(dsn, broker_url(broker, "lifebox-dispatch"), env=env) as dispatcher,
        ):
            await _wait_statuses(staff, client, {"expired"}, 1, 30)
            # Its metrics count at least these (the session's database may hold other
            # tests' unfinished commands, which this dispatcher serves too).
            assert dispatcher.metric("lifebox_dispatch_published_total") >= 1
            assert dispatcher.metric("lifebox_dispatch_expired_total") >= 1
            assert dispatcher.metric("lifebox_dispatch_delivery_latency_seconds_count") >= 1
            assert dispatcher.metric("lifebox_dispatch_mqtt_connected") == 1
    finally:
        await app.close()
    # ping: max_retries 3, so one publish and three republishes, all with the same id.
    assert devices.ids() == [str(command)] * 4
    assert [r.payload["attempt"] for r in devices.received] == [1, 2, 3, 4]
    steps = await trail(staff, client, command)
    assert steps == [
        (None, "pending", "system"),
        ("pending", "sent", "system"),
        ("sent", "sent", "system"),
        ("sent", "sent", "system"),
        ("sent", "sent", "system"),
        ("sent", "expired", "system"),
    ]


async def test_a_device_gets_its_commands_in_order_even_when_they_are_retried(
    database: Database,
    staff: asyncpg.Connection,
    broker: EmbeddedMosquitto,
    ingest: IngestProcess,
    dsn: str,
) -> None:
    client = await factories.make_client(staff)
    device, serial = await factories.make_device(staff, client)
    app = await asyncpg.connect(database.app_dsn)
    try:
        sent = [await send(app, client, device, "ping") for _ in range(5)]
    finally:
        await app.close()
    env = {**FAST, "LIFEBOX_COMMANDS_RETRY_INTERVAL_SECONDS": "0.5"}
    with (
        simulated_devices(
            broker, [serial], acks=("received", "completed"), ignore_first=True
        ) as devices,
        running_dispatcher(dsn, broker_url(broker, "lifebox-dispatch"), env=env),
    ):
        await _wait_statuses(staff, client, {"completed"}, 5, 60)
    # Each one twice (the first publish is ignored), and the next only after it.
    assert devices.ids() == [str(c) for c in sent for _ in range(2)]


async def test_a_device_s_next_command_goes_out_when_the_previous_is_delivered_not_at_the_poll(
    database: Database,
    staff: asyncpg.Connection,
    broker: EmbeddedMosquitto,
    ingest: IngestProcess,
    dsn: str,
) -> None:
    """The outbox NOTIFY that a delivered command's release sends when its device has a job
    waiting (0063) is what publishes the next one: with a 60 s poll, three queued commands
    complete in seconds only if each release wakes a dispatcher (one loop, so a wake-up lost
    during its own pass would show as well)."""
    client = await factories.make_client(staff)
    device, serial = await factories.make_device(staff, client)
    other, other_serial = await factories.make_device(staff, client)
    app = await asyncpg.connect(database.app_dsn)
    try:
        queued = [await send(app, client, device, "ping") for _ in range(3)]
    finally:
        await app.close()
    env = {
        **FAST,
        "LIFEBOX_DISPATCH_POLL_SECONDS": "60",
        "LIFEBOX_DISPATCH_CONCURRENCY": "1",
    }
    with (
        simulated_devices(broker, [serial, other_serial], acks=("received", "completed")),
        running_dispatcher(dsn, broker_url(broker, "lifebox-dispatch"), env=env),
    ):
        # Started after the commands: its start-up pass sees the first; the rest need wakes.
        await _wait_statuses(staff, client, {"completed"}, 3, 20)
        app = await asyncpg.connect(database.app_dsn)
        try:
            late = await send(app, client, other, "ping")  # an insert wakes it too
        finally:
            await app.close()
        done = await _wait_statuses(staff, client, {"completed"}, 4, 20)
    assert set(done) == {*queued, late}


async def test_a_disabled_device_or_a_suspended_client_gets_nothing_and_its_commands_expire(
    database: Database,
    staff: asyncpg.Connection,
    broker: EmbeddedMosquitto,
    ingest: IngestProcess,
    dsn: str,
) -> None:
    client = await factories.make_client(staff)
    device, serial = await factories.make_device(staff, client)
    app = await asyncpg.connect(database.app_dsn)
    try:
        command = await send(app, client, device, "ping")
    finally:
        await app.close()
    async with tenant_transaction(staff, None, staff=True):
        await staff.execute("UPDATE devices SET status = 'disabled' WHERE id = $1", device)
    with (
        simulated_devices(broker, [serial]) as devices,
        running_dispatcher(dsn, broker_url(broker, "lifebox-dispatch"), env=FAST),
    ):
        await _wait_statuses(staff, client, {"expired"}, 1, 30)
    assert devices.ids() == []
    async with tenant_transaction(staff, client) as tx:
        detail = await tx.fetchval(
            "SELECT detail::text FROM command_executions WHERE command_id = $1 "
            "AND to_status = 'expired'",
            command,
        )
    assert json.loads(detail) == {"reason": "the device is disabled"}


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_two_thousand_commands_survive_three_dispatcher_kills(
    database: Database,
    staff: asyncpg.Connection,
    broker: EmbeddedMosquitto,
    ingest: IngestProcess,
    dsn: str,
    tmp_path: Path,
) -> None:
    client = await factories.make_client(staff)
    fleet = [await factories.make_device(staff, client) for _ in range(100)]
    app = await asyncpg.connect(database.app_dsn)
    try:
        sent = [
            await send(app, client, device, "ping", timeout_s=3600)
            for _ in range(20)
            for device, _ in fleet
        ]
    finally:
        await app.close()
    env = {**FAST, "LIFEBOX_COMMANDS_RETRY_INTERVAL_SECONDS": "5"}
    url = broker_url(broker, "lifebox-dispatch")
    log = tmp_path / "dispatch.log"
    with simulated_devices(
        broker, [s for _, s in fleet], acks=("received", "completed"), per_device=False
    ) as devices:
        for kill_at in (300, 900, 1500):

            async def reached(k: int = kill_at) -> bool:
                return len(set(devices.ids())) >= k

            with running_dispatcher(dsn, url, log_path=log, env=env) as dispatcher:
                await async_wait_until(reached, 240, f"{kill_at} received")
                dispatcher.kill()  # SIGKILL, wherever it is
        with running_dispatcher(dsn, url, log_path=log, env=env):
            final = await _wait_statuses(staff, client, FINAL, len(sent), 300)
    assert set(final) == set(sent)
    assert set(final.values()) == {"completed"}, "none lost, none stuck"
    ids = devices.ids()
    assert set(ids) == {str(c) for c in sent}  # every duplicate carries an id we sent
    # Per device, first deliveries came in the order the commands were sent.
    by_device: dict[str, list[str]] = {}
    for r in devices.received:
        if r.command_id not in by_device.setdefault(r.serial, []):
            by_device[r.serial].append(r.command_id)
    for (device, serial), position in zip(fleet, range(100), strict=True):
        assert by_device[serial] == [str(sent[i * 100 + position]) for i in range(20)], device


@pytest.mark.slow
async def test_two_dispatchers_at_once_deliver_each_command_once(
    database: Database,
    staff: asyncpg.Connection,
    broker: EmbeddedMosquitto,
    ingest: IngestProcess,
    dsn: str,
) -> None:
    client = await factories.make_client(staff)
    fleet = [await factories.make_device(staff, client) for _ in range(30)]
    app = await asyncpg.connect(database.app_dsn)
    try:
        sent = [
            await send(app, client, d, "ping", timeout_s=3600) for _ in range(10) for d, _ in fleet
        ]
    finally:
        await app.close()
    env = {**FAST, "LIFEBOX_COMMANDS_RETRY_INTERVAL_SECONDS": "120"}
    url = broker_url(broker, "lifebox-dispatch")
    with (
        simulated_devices(
            broker, [s for _, s in fleet], acks=("received", "completed"), per_device=False
        ) as devices,
        running_dispatcher(dsn, url, env=env),
        running_dispatcher(dsn, url, env=env),
    ):
        await _wait_statuses(staff, client, {"completed"}, len(sent), 120)
    ids = devices.ids()
    assert sorted(ids) == sorted(str(c) for c in sent)  # each exactly once
    await asyncio.sleep(0)


def test_the_dispatcher_refuses_a_role_that_owns_the_schema(
    database: Database, broker: EmbeddedMosquitto
) -> None:
    env = {
        **os.environ,
        "LIFEBOX_DISPATCH_DATABASE_URL": database.owner_dsn,
        "LIFEBOX_DISPATCH_MQTT_URL": broker_url(broker, "lifebox-dispatch"),
        "LIFEBOX_DISPATCH_METRICS_PORT": "0",
    }
    done = subprocess.run(
        [sys.executable, "-m", "lifebox_grpc.cli", "dispatch"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "refusing to start: role lifebox_owner owns tables" in done.stderr
