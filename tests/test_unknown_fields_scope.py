"""ListUnknownFields shows operators and viewers only what their assigned devices sent
(issue 12 §7): readings go through a real broker and a real `lifebox ingest` worker."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime

import asyncpg
import pytest

from lifebox.v1 import devices_pb2, devices_pb2_grpc, telemetry_pb2_grpc
from lifebox.v1 import telemetry_pb2 as T
from lifebox_grpc.ingest.unknown_fields import FieldDevices
from lifebox_grpc.native import UnknownField
from lifebox_grpc.runtime.mosquitto import EmbeddedMosquitto
from lifebox_grpc.store.pool import tenant_transaction
from tests.helpers import factories
from tests.helpers.grpc import Account, Server, make_account, make_staff, sign_in
from tests.helpers.ingest import publisher, register_fleet, running_ingest
from tests.helpers.services import Database
from tests.helpers.wait import async_wait_until

pytestmark = pytest.mark.timeout(180)


async def _count(conn: asyncpg.Connection, table: str, client_id: uuid.UUID) -> int:
    async with tenant_transaction(conn, None, staff=True):
        return int(
            await conn.fetchval(f"SELECT count(*) FROM {table} WHERE client_id = $1", client_id)
        )


async def _list(server: Server, who: Account, page_size: int = 0) -> list[T.UnknownField]:
    api = telemetry_pb2_grpc.TelemetryServiceStub(server.channel)
    fields: list[T.UnknownField] = []
    token = ""
    while True:
        reply = await api.ListUnknownFields(
            T.ListUnknownFieldsRequest(page_size=page_size, page_token=token), metadata=who.md
        )
        fields += reply.fields
        token = reply.next_page_token
        if not token:
            return fields


async def test_a_viewer_sees_only_the_unknown_keys_its_devices_sent(
    database: Database,
    broker: EmbeddedMosquitto,
    grpc_server: Server,
    owner_conn: asyncpg.Connection,
) -> None:
    fleet = await register_fleet(database.owner_dsn, 3)
    (mine, mine_serial), (_, theirs_serial), (quiet, _) = fleet.devices
    users = {
        role: await sign_in(grpc_server, await make_account(owner_conn, role, fleet.client_id))
        for role in ("client", "viewer", "operator")
    }
    devices = devices_pb2_grpc.DeviceServiceStub(grpc_server.channel)
    for device_id in (mine, quiet):
        await devices.AssignDevice(
            devices_pb2.AssignDeviceRequest(
                device_id=str(device_id), user_id=str(users["viewer"].user_id)
            ),
            metadata=users["client"].md,
        )
    base = int(time.time() * 1000) - 10_000
    readings = [
        (mine_serial, {"ts": base, "mood": "ok", "shared": 1}),
        (mine_serial, {"ts": base + 1, "mood": "fine", "shared": 2}),
        (theirs_serial, {"ts": base, "secret": "pin-4321", "shared": "text"}),
    ]
    with running_ingest(database, broker.url, broker.port), publisher(broker.port) as pub:
        pub.publish_all(
            [(f"lifebox/v1/{serial}/telemetry", json.dumps(r).encode()) for serial, r in readings]
        )

        async def recorded() -> bool:
            catalogue = await _count(owner_conn, "unknown_field_catalog", fleet.client_id)
            per_device = await _count(owner_conn, "unknown_field_devices", fleet.client_id)
            return catalogue == 3 and per_device == 4

        await async_wait_until(recorded, 60, "the catalogue and which devices sent each key")

    admin_view = {f.field: f for f in await _list(grpc_server, users["client"])}
    assert sorted(admin_view) == ["mood", "secret", "shared"]
    assert admin_view["shared"].inferred_type == "mixed"
    assert admin_view["shared"].seen_count == 3

    viewer_view = await _list(grpc_server, users["viewer"], page_size=1)  # one field a page
    assert [f.field for f in viewer_view] == ["mood", "shared"]
    shared = viewer_view[1]
    # Nothing the other device sent shows: not its key, its type, its value or its count.
    assert (shared.inferred_type, shared.example_json, shared.seen_count) == ("number", "1", 0)
    assert shared.client_id == str(fleet.client_id)
    assert shared.HasField("first_seen_time")
    assert not shared.HasField("last_seen_time")
    assert viewer_view[0].example_json == '"ok"'

    # An operator with no assignment sees nothing; staff see the client's whole catalogue.
    assert await _list(grpc_server, users["operator"]) == []
    staff = await make_staff(grpc_server, owner_conn, "admin")
    api = telemetry_pb2_grpc.TelemetryServiceStub(grpc_server.channel)
    by_staff = await api.ListUnknownFields(
        T.ListUnknownFieldsRequest(client_id=str(fleet.client_id)), metadata=staff.md
    )
    assert [f.field for f in by_staff.fields] == ["mood", "secret", "shared"]

    # Deleting a device takes what it sent with it.
    await devices.DeleteDevice(
        devices_pb2.DeleteDeviceRequest(id=str(mine), hard=True), metadata=users["client"].md
    )
    assert await _list(grpc_server, users["viewer"]) == []


async def test_a_worker_writes_each_device_key_pair_once(
    database: Database, owner_conn: asyncpg.Connection
) -> None:
    client_id = await factories.make_client(owner_conn)
    device_id, _ = await factories.make_device(owner_conn, client_id)
    gone = uuid.uuid4()  # a device deleted before its facts were written
    seen = [
        UnknownField(client_id, device_id, "mood", "string", 1, '"ok"'),
        UnknownField(client_id, gone, "mood", "string", 1, '"ok"'),
    ]
    pairs = FieldDevices()
    conn = await asyncpg.connect(database.ingest_dsn)  # as the ingest worker writes them
    try:
        pairs.note(seen, datetime.now(UTC))
        assert pairs.pending
        await pairs.flush(conn)
        assert not pairs.pending
        pairs.note(seen[:1], datetime.now(UTC))
        assert not pairs.pending, "a pair this worker wrote is not written again"
        # Another worker's write of the same pair is skipped by the database.
        await FieldDevices().flush(conn)
        other = FieldDevices()
        other.note(seen[:1], datetime.now(UTC))
        await other.flush(conn)
    finally:
        await conn.close()
    async with tenant_transaction(owner_conn, None, staff=True):
        rows = await owner_conn.fetch(
            "SELECT device_id, field_name, inferred_type, example_value::text AS example "
            "FROM unknown_field_devices WHERE client_id = $1",
            client_id,
        )
    assert [tuple(r) for r in rows] == [(device_id, "mood", "string", '"ok"')]
