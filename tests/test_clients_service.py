"""ClientService over gRPC: staff manage clients; a client's users see only their own."""

from __future__ import annotations

import asyncpg
import grpc
import pytest
from google.protobuf import field_mask_pb2

from lifebox.v1 import auth_pb2, clients_pb2
from tests.helpers import factories
from tests.helpers.grpc import PASSWORD, Server, make_staff, make_tenant, reason


async def test_staff_create_get_list_update_clients(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    admin = await make_staff(grpc_server, owner_conn, "admin")
    slug = factories.unique("acme")
    created = await grpc_server.clients.CreateClient(
        clients_pb2.CreateClientRequest(
            client=clients_pb2.Client(
                name="Acme", slug=slug, billing_mode=clients_pb2.BILLING_MODE_POSTPAID
            )
        ),
        metadata=admin.md,
    )
    client = created.client
    assert client.status == clients_pb2.CLIENT_STATUS_ACTIVE
    assert client.currency_code == "EGP"
    assert client.balance.amount.startswith("0")
    got = await grpc_server.clients.GetClient(
        clients_pb2.GetClientRequest(id=client.id), metadata=admin.md
    )
    assert got.client == client
    with pytest.raises(grpc.aio.AioRpcError) as duplicate:
        await grpc_server.clients.CreateClient(
            clients_pb2.CreateClientRequest(client=clients_pb2.Client(name="Again", slug=slug)),
            metadata=admin.md,
        )
    assert duplicate.value.code() == grpc.StatusCode.ALREADY_EXISTS
    updated = await grpc_server.clients.UpdateClient(
        clients_pb2.UpdateClientRequest(
            client=clients_pb2.Client(id=client.id, name="Acme Ltd", currency_code="USD"),
            update_mask=field_mask_pb2.FieldMask(paths=["name", "currency_code"]),
        ),
        metadata=admin.md,
    )
    assert updated.client.name == "Acme Ltd"
    assert updated.client.currency_code == "USD"
    assert updated.client.slug == slug

    seen: list[str] = []
    token = ""
    while True:
        page = await grpc_server.clients.ListClients(
            clients_pb2.ListClientsRequest(page_size=2, page_token=token), metadata=admin.md
        )
        assert len(page.clients) <= 2
        seen += [c.slug for c in page.clients]
        token = page.next_page_token
        if not token:
            break
    assert slug in seen
    assert seen == sorted(seen)
    assert len(seen) == len(set(seen))


async def test_a_client_user_sees_only_their_own_client_and_cannot_change_it(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    tenant = await make_tenant(grpc_server, owner_conn)
    await make_tenant(grpc_server, owner_conn)
    me = tenant.users["client"]
    listed = await grpc_server.clients.ListClients(clients_pb2.ListClientsRequest(), metadata=me.md)
    assert [c.id for c in listed.clients] == [str(tenant.client_id)]
    for call in (
        grpc_server.clients.SuspendClient(
            clients_pb2.SuspendClientRequest(id=str(tenant.client_id)), metadata=me.md
        ),
        grpc_server.clients.CreateClient(
            clients_pb2.CreateClientRequest(
                client=clients_pb2.Client(name="Mine", slug=factories.unique("mine"))
            ),
            metadata=me.md,
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await call
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    viewer = tenant.users["viewer"]
    with pytest.raises(grpc.aio.AioRpcError) as viewer_denied:
        await grpc_server.clients.GetClient(
            clients_pb2.GetClientRequest(id=str(tenant.client_id)), metadata=viewer.md
        )
    assert viewer_denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert reason(viewer_denied.value) == "ERROR_REASON_PERMISSION_MISSING"


async def test_suspend_blocks_sign_in_and_resume_restores_it(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    admin = await make_staff(grpc_server, owner_conn, "admin")
    tenant = await make_tenant(grpc_server, owner_conn)
    user = tenant.users["operator"]
    suspended = await grpc_server.clients.SuspendClient(
        clients_pb2.SuspendClientRequest(id=str(tenant.client_id), reason="unpaid"),
        metadata=admin.md,
    )
    assert suspended.client.status == clients_pb2.CLIENT_STATUS_SUSPENDED
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await grpc_server.auth.Login(auth_pb2.LoginRequest(email=user.email, password=PASSWORD))
    assert reason(refused.value) == "ERROR_REASON_CLIENT_SUSPENDED"
    resumed = await grpc_server.clients.ResumeClient(
        clients_pb2.ResumeClientRequest(id=str(tenant.client_id)), metadata=admin.md
    )
    assert resumed.client.status == clients_pb2.CLIENT_STATUS_ACTIVE
    await grpc_server.auth.Login(auth_pb2.LoginRequest(email=user.email, password=PASSWORD))
