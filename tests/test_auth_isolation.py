"""Two-tenant matrix over every RPC of AuthService and ClientService.

The principal is client A's tenant administrator (role ``client``, the tenant role holding
the most permissions). Naming anything of client B gives NOT_FOUND and no data; methods that
name nothing return nothing of B. Tenant roles lacking a permission get PERMISSION_DENIED
whatever they name, which says nothing about existence.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf import field_mask_pb2

from lifebox.v1 import auth_pb2, clients_pb2, common_pb2
from lifebox_grpc.services.registry import method_names
from lifebox_grpc.store import clients as client_store
from lifebox_grpc.store import users as user_store
from lifebox_grpc.store.pool import tenant_transaction
from tests.helpers.grpc import PASSWORD, Server, Tenant, make_tenant

Case = Callable[[Server, Tenant, Tenant], Awaitable[Any]]
A = "client"


def _user_b(b: Tenant) -> str:
    return str(b.users["viewer"].user_id)


async def _not_found(call: Awaitable[Any]) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND, refused.value.details()


async def _denied(call: Awaitable[Any]) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


def _no_trace_of(b: Tenant, reply: Any) -> None:
    text = str(reply)
    assert str(b.client_id) not in text
    for account in b.users.values():
        assert str(account.user_id) not in text
        assert account.email not in text


async def _login(s: Server, a: Tenant, b: Tenant) -> None:
    # Signing in names an e-mail, not a tenant: a's user gets a's data only.
    reply = await s.auth.Login(auth_pb2.LoginRequest(email=a.users[A].email, password=PASSWORD))
    _no_trace_of(b, reply)


async def _refresh(s: Server, a: Tenant, b: Tenant) -> None:
    reply = await s.auth.RefreshToken(
        auth_pb2.RefreshTokenRequest(refresh_token=a.users["viewer"].refresh_token)
    )
    _no_trace_of(b, reply)


async def _logout(s: Server, a: Tenant, b: Tenant) -> None:
    await _not_found(
        s.auth.Logout(
            auth_pb2.LogoutRequest(refresh_token=b.users["operator"].refresh_token),
            metadata=a.users[A].md,
        )
    )


async def _request_reset(s: Server, a: Tenant, b: Tenant) -> None:
    reply = await s.auth.RequestPasswordReset(
        auth_pb2.RequestPasswordResetRequest(email="nobody@test.lifebox.local")
    )
    _no_trace_of(b, reply)


async def _reset(s: Server, a: Tenant, b: Tenant) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await s.auth.ResetPassword(
            auth_pb2.ResetPasswordRequest(reset_token="x" * 43, new_password="long enough pass")
        )
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def _change_password(s: Server, a: Tenant, b: Tenant) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await s.auth.ChangePassword(
            auth_pb2.ChangePasswordRequest(current_password="wrong", new_password="x" * 20),
            metadata=a.users[A].md,
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def _get_me(s: Server, a: Tenant, b: Tenant) -> None:
    _no_trace_of(b, await s.auth.GetMe(auth_pb2.GetMeRequest(), metadata=a.users[A].md))


async def _create_user(s: Server, a: Tenant, b: Tenant) -> None:
    user = auth_pb2.User(
        email="intruder@test.lifebox.local", role=common_pb2.ROLE_VIEWER, client_id=str(b.client_id)
    )
    await _not_found(
        s.auth.CreateUser(
            auth_pb2.CreateUserRequest(user=user, password="long enough password"),
            metadata=a.users[A].md,
        )
    )


async def _get_user(s: Server, a: Tenant, b: Tenant) -> None:
    await _not_found(s.auth.GetUser(auth_pb2.GetUserRequest(id=_user_b(b)), metadata=a.users[A].md))


async def _list_users(s: Server, a: Tenant, b: Tenant) -> None:
    _no_trace_of(b, await s.auth.ListUsers(auth_pb2.ListUsersRequest(), metadata=a.users[A].md))
    await _not_found(
        s.auth.ListUsers(
            auth_pb2.ListUsersRequest(client_id=str(b.client_id)), metadata=a.users[A].md
        )
    )


async def _update_user(s: Server, a: Tenant, b: Tenant) -> None:
    await _not_found(
        s.auth.UpdateUser(
            auth_pb2.UpdateUserRequest(
                user=auth_pb2.User(id=_user_b(b), display_name="owned"),
                update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
            ),
            metadata=a.users[A].md,
        )
    )


async def _delete_user(s: Server, a: Tenant, b: Tenant) -> None:
    await _not_found(
        s.auth.DeleteUser(auth_pb2.DeleteUserRequest(id=_user_b(b)), metadata=a.users[A].md)
    )


async def _list_roles(s: Server, a: Tenant, b: Tenant) -> None:
    _no_trace_of(b, await s.auth.ListRoles(auth_pb2.ListRolesRequest(), metadata=a.users[A].md))


async def _list_permissions(s: Server, a: Tenant, b: Tenant) -> None:
    reply = await s.auth.ListPermissions(auth_pb2.ListPermissionsRequest(), metadata=a.users[A].md)
    _no_trace_of(b, reply)


async def _update_role_permissions(s: Server, a: Tenant, b: Tenant) -> None:
    # Roles are global, not B's: a tenant is simply not allowed.
    await _denied(
        s.auth.UpdateRolePermissions(
            auth_pb2.UpdateRolePermissionsRequest(role=common_pb2.ROLE_VIEWER),
            metadata=a.users[A].md,
        )
    )


async def _create_client(s: Server, a: Tenant, b: Tenant) -> None:
    await _denied(
        s.clients.CreateClient(
            clients_pb2.CreateClientRequest(client=clients_pb2.Client(name="x", slug="xyz-abc")),
            metadata=a.users[A].md,
        )
    )


async def _get_client(s: Server, a: Tenant, b: Tenant) -> None:
    await _not_found(
        s.clients.GetClient(
            clients_pb2.GetClientRequest(id=str(b.client_id)), metadata=a.users[A].md
        )
    )


async def _list_clients(s: Server, a: Tenant, b: Tenant) -> None:
    reply = await s.clients.ListClients(clients_pb2.ListClientsRequest(), metadata=a.users[A].md)
    _no_trace_of(b, reply)


async def _update_client(s: Server, a: Tenant, b: Tenant) -> None:
    await _not_found(
        s.clients.UpdateClient(
            clients_pb2.UpdateClientRequest(
                client=clients_pb2.Client(id=str(b.client_id), name="owned"),
                update_mask=field_mask_pb2.FieldMask(paths=["name"]),
            ),
            metadata=a.users[A].md,
        )
    )


async def _suspend_client(s: Server, a: Tenant, b: Tenant) -> None:
    await _not_found(
        s.clients.SuspendClient(
            clients_pb2.SuspendClientRequest(id=str(b.client_id)), metadata=a.users[A].md
        )
    )


async def _resume_client(s: Server, a: Tenant, b: Tenant) -> None:
    await _not_found(
        s.clients.ResumeClient(
            clients_pb2.ResumeClientRequest(id=str(b.client_id)), metadata=a.users[A].md
        )
    )


MATRIX: dict[str, Case] = {
    "/lifebox.v1.AuthService/Login": _login,
    "/lifebox.v1.AuthService/RefreshToken": _refresh,
    "/lifebox.v1.AuthService/Logout": _logout,
    "/lifebox.v1.AuthService/RequestPasswordReset": _request_reset,
    "/lifebox.v1.AuthService/ResetPassword": _reset,
    "/lifebox.v1.AuthService/ChangePassword": _change_password,
    "/lifebox.v1.AuthService/GetMe": _get_me,
    "/lifebox.v1.AuthService/CreateUser": _create_user,
    "/lifebox.v1.AuthService/GetUser": _get_user,
    "/lifebox.v1.AuthService/ListUsers": _list_users,
    "/lifebox.v1.AuthService/UpdateUser": _update_user,
    "/lifebox.v1.AuthService/DeleteUser": _delete_user,
    "/lifebox.v1.AuthService/ListRoles": _list_roles,
    "/lifebox.v1.AuthService/ListPermissions": _list_permissions,
    "/lifebox.v1.AuthService/UpdateRolePermissions": _update_role_permissions,
    "/lifebox.v1.ClientService/CreateClient": _create_client,
    "/lifebox.v1.ClientService/GetClient": _get_client,
    "/lifebox.v1.ClientService/ListClients": _list_clients,
    "/lifebox.v1.ClientService/UpdateClient": _update_client,
    "/lifebox.v1.ClientService/SuspendClient": _suspend_client,
    "/lifebox.v1.ClientService/ResumeClient": _resume_client,
}


def test_the_matrix_covers_every_method_of_these_services() -> None:
    ours = {m for m in method_names() if "/lifebox.v1.AuthService/" in m or "ClientService" in m}
    assert ours == set(MATRIX)


@pytest.mark.parametrize("method", sorted(MATRIX))
async def test_client_a_naming_client_b_gets_not_found_and_no_data(
    grpc_server: Server, owner_conn: asyncpg.Connection, method: str
) -> None:
    a = await make_tenant(grpc_server, owner_conn)
    b = await make_tenant(grpc_server, owner_conn)
    await MATRIX[method](grpc_server, a, b)
    # B is untouched.
    async with tenant_transaction(owner_conn, b.client_id):
        client = await client_store.get_client(owner_conn, b.client_id, b.client_id)
        user = await user_store.get_user(owner_conn, b.users["viewer"].user_id, b.client_id)
    assert client is not None
    assert client.status == "active"
    assert client.name == client.slug
    assert user is not None
    assert user.display_name is None


async def test_an_unscoped_store_query_still_sees_only_its_tenant(
    grpc_server: Server, owner_conn: asyncpg.Connection, app_conn: asyncpg.Connection
) -> None:
    a = await make_tenant(grpc_server, owner_conn)
    await make_tenant(grpc_server, owner_conn)
    async with tenant_transaction(app_conn, a.client_id):
        visible = await client_store.list_all_clients_unscoped(app_conn)
        users = await app_conn.fetch("SELECT client_id FROM users")  # no WHERE, on purpose
    assert [c.id for c in visible] == [a.client_id]
    assert {u["client_id"] for u in users} == {a.client_id}
    async with app_conn.transaction():
        assert await client_store.list_all_clients_unscoped(app_conn) == []
