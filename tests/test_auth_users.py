"""Users and roles over gRPC, and INVALID_ARGUMENT with field violations for bad input."""

from __future__ import annotations

import uuid

import asyncpg
import grpc
import pytest
from google.protobuf import field_mask_pb2

from lifebox.v1 import auth_pb2, clients_pb2, common_pb2
from tests.helpers import factories
from tests.helpers.grpc import (
    PASSWORD,
    Account,
    Server,
    make_staff,
    make_tenant,
    sign_in,
    violations,
)


def _new_user(**fields: object) -> auth_pb2.User:
    values: dict[str, object] = {
        "email": f"{factories.unique('new')}@test.lifebox.local",
        "role": common_pb2.ROLE_VIEWER,
    }
    values.update(fields)
    return auth_pb2.User(**values)  # type: ignore[arg-type]


async def test_tenant_admin_manages_users_of_their_client(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    tenant = await make_tenant(grpc_server, owner_conn)
    me = tenant.users["client"]
    created = (
        await grpc_server.auth.CreateUser(
            auth_pb2.CreateUserRequest(user=_new_user(display_name="Vera"), password=PASSWORD),
            metadata=me.md,
        )
    ).user
    assert created.client_id == str(tenant.client_id)
    assert created.status == auth_pb2.USER_STATUS_ACTIVE
    got = await grpc_server.auth.GetUser(auth_pb2.GetUserRequest(id=created.id), metadata=me.md)
    assert got.user == created
    with pytest.raises(grpc.aio.AioRpcError) as duplicate:
        await grpc_server.auth.CreateUser(
            auth_pb2.CreateUserRequest(
                user=_new_user(email=created.email.upper()), password=PASSWORD
            ),
            metadata=me.md,
        )
    assert duplicate.value.code() == grpc.StatusCode.ALREADY_EXISTS
    updated = await grpc_server.auth.UpdateUser(
        auth_pb2.UpdateUserRequest(
            user=auth_pb2.User(id=created.id, display_name="Vera V", role=common_pb2.ROLE_OPERATOR),
            update_mask=field_mask_pb2.FieldMask(paths=["display_name", "role"]),
        ),
        metadata=me.md,
    )
    assert updated.user.display_name == "Vera V"
    assert updated.user.role == common_pb2.ROLE_OPERATOR
    emails: list[str] = []
    token = ""
    while True:
        page = await grpc_server.auth.ListUsers(
            auth_pb2.ListUsersRequest(page_size=2, page_token=token), metadata=me.md
        )
        emails += [u.email for u in page.users]
        token = page.next_page_token
        if not token:
            break
    assert len(emails) == 4
    assert emails == sorted(emails, key=str.lower)
    await grpc_server.auth.DeleteUser(auth_pb2.DeleteUserRequest(id=created.id), metadata=me.md)
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await grpc_server.auth.GetUser(auth_pb2.GetUserRequest(id=created.id), metadata=me.md)
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND


async def test_nobody_raises_their_own_role_or_grants_above_their_own(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    tenant = await make_tenant(grpc_server, owner_conn)
    me = tenant.users["client"]
    for target, role in (
        (me, common_pb2.ROLE_ADMIN),
        (tenant.users["viewer"], common_pb2.ROLE_SUPER_USER),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await grpc_server.auth.UpdateUser(
                auth_pb2.UpdateUserRequest(
                    user=auth_pb2.User(id=str(target.user_id), role=role),
                    update_mask=field_mask_pb2.FieldMask(paths=["role"]),
                ),
                metadata=me.md,
            )
        assert refused.value.code() in (
            grpc.StatusCode.PERMISSION_DENIED,
            grpc.StatusCode.INVALID_ARGUMENT,
        )
    admin = await make_staff(grpc_server, owner_conn, "admin")
    with pytest.raises(grpc.aio.AioRpcError) as above:
        await grpc_server.auth.CreateUser(
            auth_pb2.CreateUserRequest(
                user=_new_user(role=common_pb2.ROLE_SUPER_USER), password=PASSWORD
            ),
            metadata=admin.md,
        )
    assert above.value.code() == grpc.StatusCode.PERMISSION_DENIED
    viewer = tenant.users["viewer"]
    with pytest.raises(grpc.aio.AioRpcError) as viewer_denied:
        await grpc_server.auth.ListUsers(auth_pb2.ListUsersRequest(), metadata=viewer.md)
    assert viewer_denied.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_staff_create_users_in_any_client_and_only_super_user_edits_roles(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    admin = await make_staff(grpc_server, owner_conn, "admin")
    root = await make_staff(grpc_server, owner_conn, "super_user")
    client = (
        await grpc_server.clients.CreateClient(
            clients_pb2.CreateClientRequest(
                client=clients_pb2.Client(name="Staffed", slug=factories.unique("staffed"))
            ),
            metadata=admin.md,
        )
    ).client
    created = await grpc_server.auth.CreateUser(
        auth_pb2.CreateUserRequest(
            user=_new_user(role=common_pb2.ROLE_CLIENT, client_id=client.id), password=PASSWORD
        ),
        metadata=admin.md,
    )
    newcomer = await sign_in(
        grpc_server,
        Account(
            user_id=uuid.UUID(created.user.id),
            email=created.user.email,
            role="client",
            client_id=uuid.UUID(client.id),
        ),
    )
    me = await grpc_server.auth.GetMe(auth_pb2.GetMeRequest(), metadata=newcomer.md)
    assert me.user.client_id == client.id

    roles = await grpc_server.auth.ListRoles(auth_pb2.ListRolesRequest(), metadata=admin.md)
    assert [r.name for r in roles.roles][:2] == ["super_user", "admin"]
    known = await grpc_server.auth.ListPermissions(
        auth_pb2.ListPermissionsRequest(), metadata=admin.md
    )
    assert "users.write" in {p.name for p in known.permissions}
    viewer_role = next(r for r in roles.roles if r.name == "viewer")
    request = auth_pb2.UpdateRolePermissionsRequest(
        role=common_pb2.ROLE_VIEWER, permissions=[*viewer_role.permissions, "billing.read"]
    )
    with pytest.raises(grpc.aio.AioRpcError) as not_root:
        await grpc_server.auth.UpdateRolePermissions(request, metadata=admin.md)
    assert not_root.value.code() == grpc.StatusCode.PERMISSION_DENIED
    try:
        changed = await grpc_server.auth.UpdateRolePermissions(request, metadata=root.md)
        assert "billing.read" in changed.role.permissions
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await grpc_server.auth.UpdateRolePermissions(
                auth_pb2.UpdateRolePermissionsRequest(
                    role=common_pb2.ROLE_VIEWER, permissions=["made.up"]
                ),
                metadata=root.md,
            )
        assert "permissions[0]" in violations(unknown.value)
    finally:
        await grpc_server.auth.UpdateRolePermissions(
            auth_pb2.UpdateRolePermissionsRequest(
                role=common_pb2.ROLE_VIEWER, permissions=list(viewer_role.permissions)
            ),
            metadata=root.md,
        )


async def test_bad_inputs_are_invalid_argument_with_field_violations(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    tenant = await make_tenant(grpc_server, owner_conn)
    admin = await make_staff(grpc_server, owner_conn, "admin")
    md = tenant.users["client"].md
    cases = [
        (grpc_server.auth.Login(auth_pb2.LoginRequest()), {"email", "password"}),
        (
            grpc_server.auth.Login(auth_pb2.LoginRequest(email="not-an-email", password="x")),
            {"email"},
        ),
        (
            grpc_server.auth.Login(auth_pb2.LoginRequest(email="a" * 250 + "@x.io", password="x")),
            {"email"},
        ),
        (
            grpc_server.auth.CreateUser(
                auth_pb2.CreateUserRequest(
                    user=auth_pb2.User(email="bad", display_name="x" * 201), password=""
                ),
                metadata=md,
            ),
            {"user.email", "user.display_name", "user.role", "password"},
        ),
        (
            grpc_server.auth.ListUsers(auth_pb2.ListUsersRequest(page_size=501), metadata=md),
            {"page_size"},
        ),
        (
            grpc_server.auth.ListUsers(
                auth_pb2.ListUsersRequest(page_token="garbage!"), metadata=md
            ),
            {"page_token"},
        ),
        (grpc_server.auth.GetUser(auth_pb2.GetUserRequest(id="42"), metadata=md), {"id"}),
        (
            grpc_server.auth.UpdateUser(
                auth_pb2.UpdateUserRequest(
                    user=auth_pb2.User(id=str(tenant.users["viewer"].user_id)),
                    update_mask=field_mask_pb2.FieldMask(paths=["password_hash"]),
                ),
                metadata=md,
            ),
            {"update_mask"},
        ),
        (
            grpc_server.auth.UpdateUser(
                auth_pb2.UpdateUserRequest(
                    user=auth_pb2.User(id=str(tenant.users["viewer"].user_id))
                ),
                metadata=md,
            ),
            {"update_mask"},
        ),
        (
            grpc_server.clients.CreateClient(
                clients_pb2.CreateClientRequest(
                    client=clients_pb2.Client(name="", slug="Not A Slug", currency_code="egp")
                ),
                metadata=admin.md,
            ),
            {"client.name", "client.slug", "client.currency_code"},
        ),
        (
            grpc_server.clients.ListClients(
                clients_pb2.ListClientsRequest(page_size=-1), metadata=admin.md
            ),
            {"page_size"},
        ),
        (
            grpc_server.clients.UpdateClient(
                clients_pb2.UpdateClientRequest(
                    client=clients_pb2.Client(id=str(tenant.client_id), name="x" * 201),
                    update_mask=field_mask_pb2.FieldMask(paths=["name", "balance"]),
                ),
                metadata=admin.md,
            ),
            {"client.name", "update_mask"},
        ),
    ]
    for call, fields in cases:
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await call
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad.value.details()
        assert set(violations(bad.value)) == fields
