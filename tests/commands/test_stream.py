"""StreamCommandUpdates: the caller's visible transitions, from a time, then live."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
from google.protobuf import timestamp_pb2

from lifebox.v1 import commands_pb2 as pb
from lifebox.v1 import commands_pb2_grpc
from tests.commands.test_access import assign, send_request
from tests.helpers import factories
from tests.helpers.grpc import Server, make_tenant


async def test_a_stream_catches_up_then_follows_only_what_its_caller_sees(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    t = await make_tenant(grpc_server, owner_conn)
    other = await make_tenant(grpc_server, owner_conn)
    s = commands_pb2_grpc.CommandServiceStub(grpc_server.channel)
    admin, viewer = t.users["client"], t.users["viewer"]
    mine, _ = await factories.make_device(owner_conn, t.client_id)
    hidden, _ = await factories.make_device(owner_conn, t.client_id)
    await assign(owner_conn, t.client_id, viewer.user_id, mine, "view")
    elsewhere, _ = await factories.make_device(owner_conn, other.client_id)
    before = (await s.SendCommand(send_request(mine, "ping"), metadata=admin.md)).command
    start = timestamp_pb2.Timestamp()
    start.FromDatetime(datetime.now(UTC) - timedelta(minutes=1))
    streams = {
        who: s.StreamCommandUpdates(pb.StreamCommandUpdatesRequest(start_time=start), metadata=md)
        for who, md in (("admin", admin.md), ("viewer", viewer.md))
    }
    first = {who: await asyncio.wait_for(call.read(), 10) for who, call in streams.items()}
    for reply in first.values():  # caught up: the command sent before the stream began
        assert reply.command.id == before.id
        assert reply.execution.to_status == pb.COMMAND_STATUS_PENDING
    await s.SendCommand(send_request(hidden, "ping"), metadata=admin.md)
    await s.SendCommand(send_request(elsewhere, "ping"), metadata=other.users["client"].md)
    await s.CancelCommand(pb.CancelCommandRequest(id=before.id), metadata=admin.md)
    admin_next = [await asyncio.wait_for(streams["admin"].read(), 10) for _ in range(2)]
    assert [(r.command.device_id, r.execution.to_status) for r in admin_next] == [
        (str(hidden), pb.COMMAND_STATUS_PENDING),
        (str(mine), pb.COMMAND_STATUS_CANCELLED),
    ]
    viewer_next = await asyncio.wait_for(streams["viewer"].read(), 10)
    # The viewer sees neither the unassigned device nor the other tenant: only the cancel.
    assert viewer_next.command.id == before.id
    assert viewer_next.execution.to_status == pb.COMMAND_STATUS_CANCELLED
    assert viewer_next.command.status == pb.COMMAND_STATUS_CANCELLED
    for call in streams.values():
        call.cancel()
