"""Who may do what with commands: the two-tenant matrix over every CommandService method,
roles x grant scope x delegation depth, revocation of a chain, and bad input."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf import field_mask_pb2, struct_pb2, timestamp_pb2

from lifebox.v1 import commands_pb2 as pb
from lifebox.v1 import commands_pb2_grpc
from lifebox_grpc.services.registry import method_names
from lifebox_grpc.store.pool import tenant_transaction
from tests.helpers import factories
from tests.helpers.grpc import Server, Tenant, error_of, make_tenant, violations

Stub = commands_pb2_grpc.CommandServiceStub
_SERVICE = "/lifebox.v1.CommandService/"


def stub(server: Server) -> Stub:
    return commands_pb2_grpc.CommandServiceStub(server.channel)


async def _code(call: Awaitable[Any]) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def assign(
    conn: asyncpg.Connection, client: uuid.UUID, user: uuid.UUID, device: uuid.UUID, level: str
) -> None:
    async with tenant_transaction(conn, None, staff=True):
        await conn.execute(
            "INSERT INTO user_device_assignments (client_id, user_id, device_id, access_level) "
            "VALUES ($1, $2, $3, $4)",
            client,
            user,
            device,
            level,
        )


def send_request(device: uuid.UUID, code: str = "reboot", **kw: Any) -> pb.SendCommandRequest:
    return pb.SendCommandRequest(device_id=str(device), template_code=code, **kw)


# -- the two-tenant matrix ------------------------------------------------------------------


class Other:
    """Tenant B's command resources, each named by tenant A's administrator."""

    def __init__(self) -> None:
        self.device = uuid.uuid4()
        self.command = uuid.uuid4()
        self.template = uuid.uuid4()
        self.grant = uuid.uuid4()
        self.user = uuid.uuid4()


async def other_tenant(conn: asyncpg.Connection, b: Tenant) -> Other:
    o = Other()
    o.device, _ = await factories.make_device(conn, b.client_id)
    o.command = await factories.make_command(conn, b.client_id, o.device, code="ping")
    o.user = b.users["operator"].user_id
    async with tenant_transaction(conn, None, staff=True):
        o.template = await conn.fetchval(
            "INSERT INTO command_templates (client_id, code, name, command_permission, "
            "parameters_schema) VALUES ($1, 'b_only', 'B', 'basic_control', "
            '\'{"type": "object"}\') RETURNING id',
            b.client_id,
        )
        o.grant = await conn.fetchval(
            "INSERT INTO user_command_permissions (client_id, user_id, command_permission) "
            "VALUES ($1, $2, 'basic_control') RETURNING id",
            b.client_id,
            o.user,
        )
    return o


Case = Callable[[Stub, Any, Other], Awaitable[None]]


async def _nf(call: Awaitable[Any]) -> None:
    assert await _code(call) is grpc.StatusCode.NOT_FOUND


async def _list_templates(s: Stub, md: Any, o: Other) -> None:
    reply = await s.ListCommandTemplates(pb.ListCommandTemplatesRequest(page_size=500), metadata=md)
    assert str(o.template) not in {t.id for t in reply.templates}
    assert len(reply.templates) >= 34  # the platform's


async def _list_commands(s: Stub, md: Any, o: Other) -> None:
    reply = await s.ListCommands(pb.ListCommandsRequest(), metadata=md)
    assert str(o.command) not in {c.id for c in reply.commands}
    await _nf(s.ListCommands(pb.ListCommandsRequest(device_id=str(o.device)), metadata=md))


async def _list_grants(s: Stub, md: Any, o: Other) -> None:
    reply = await s.ListCommandGrants(pb.ListCommandGrantsRequest(show_revoked=True), metadata=md)
    assert str(o.grant) not in {g.id for g in reply.grants}


async def _stream(s: Stub, md: Any, o: Other) -> None:
    call = s.StreamCommandUpdates(
        pb.StreamCommandUpdatesRequest(device_ids=[str(o.device)]), metadata=md
    )
    await _nf(call.read())


MATRIX: dict[str, Case] = {
    "ListCommandTemplates": _list_templates,
    "GetCommandTemplate": lambda s, md, o: _nf(
        s.GetCommandTemplate(pb.GetCommandTemplateRequest(id=str(o.template)), metadata=md)
    ),
    "CreateCommandTemplate": lambda s, md, o: _nf(
        s.UpdateCommandTemplate(  # creating names no resource: the tenant's own is used
            pb.UpdateCommandTemplateRequest(
                template=pb.CommandTemplate(id=str(o.template), name="x"),
                update_mask=field_mask_pb2.FieldMask(paths=["name"]),
            ),
            metadata=md,
        )
    ),
    "UpdateCommandTemplate": lambda s, md, o: _nf(
        s.UpdateCommandTemplate(
            pb.UpdateCommandTemplateRequest(
                template=pb.CommandTemplate(id=str(o.template), enabled=False),
                update_mask=field_mask_pb2.FieldMask(paths=["enabled"]),
            ),
            metadata=md,
        )
    ),
    "ListCommandPermissions": lambda s, md, o: s.ListCommandPermissions(
        pb.ListCommandPermissionsRequest(), metadata=md
    ),
    "GrantCommandPermission": lambda s, md, o: _nf(
        s.GrantCommandPermission(
            pb.GrantCommandPermissionRequest(
                user_id=str(o.user), command_permission="basic_control"
            ),
            metadata=md,
        )
    ),
    "ListCommandGrants": _list_grants,
    "RevokeCommandGrant": lambda s, md, o: _nf(
        s.RevokeCommandGrant(pb.RevokeCommandGrantRequest(id=str(o.grant)), metadata=md)
    ),
    "SendCommand": lambda s, md, o: _nf(s.SendCommand(send_request(o.device), metadata=md)),
    "BatchSendCommand": lambda s, md, o: _batch_nf(s, md, o),
    "GetCommand": lambda s, md, o: _nf(
        s.GetCommand(pb.GetCommandRequest(id=str(o.command)), metadata=md)
    ),
    "ListCommands": _list_commands,
    "CancelCommand": lambda s, md, o: _nf(
        s.CancelCommand(pb.CancelCommandRequest(id=str(o.command)), metadata=md)
    ),
    "ListCommandExecutions": lambda s, md, o: _nf(
        s.ListCommandExecutions(
            pb.ListCommandExecutionsRequest(command_id=str(o.command)), metadata=md
        )
    ),
    "StreamCommandUpdates": _stream,
}


async def _batch_nf(s: Stub, md: Any, o: Other) -> None:
    reply = await s.BatchSendCommand(
        pb.BatchSendCommandRequest(device_ids=[str(o.device)], template_code="ping"), metadata=md
    )
    assert [r.code for r in reply.results] == ["NOT_FOUND"]


def test_the_matrix_covers_every_command_method() -> None:
    ours = {m.removeprefix(_SERVICE) for m in method_names() if m.startswith(_SERVICE)}
    assert ours == set(MATRIX)


@pytest.mark.parametrize("method", sorted(MATRIX))
async def test_naming_another_tenants_command_resources_is_not_found(
    grpc_server: Server, owner_conn: asyncpg.Connection, method: str
) -> None:
    a = await make_tenant(grpc_server, owner_conn)
    b = await make_tenant(grpc_server, owner_conn)
    other = await other_tenant(owner_conn, b)
    await MATRIX[method](stub(grpc_server), a.users["client"].md, other)
    async with tenant_transaction(owner_conn, b.client_id) as tx:
        row = await tx.fetchrow(
            "SELECT (SELECT status FROM control_commands WHERE id = $1) AS status, "
            "(SELECT enabled FROM command_templates WHERE id = $2) AS enabled, "
            "(SELECT revoked_at FROM user_command_permissions WHERE id = $3) AS revoked, "
            "(SELECT count(*) FROM control_commands WHERE client_id = $4) AS commands",
            other.command,
            other.template,
            other.grant,
            b.client_id,
        )
    assert (row["status"], row["enabled"], row["revoked"], row["commands"]) == (
        "pending",
        True,
        None,
        1,
    )


# -- roles, grants, delegation ------------------------------------------------------------------


async def test_who_may_send_role_by_level_by_grant_scope(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    t = await make_tenant(grpc_server, owner_conn)
    s = stub(grpc_server)
    one, _ = await factories.make_device(owner_conn, t.client_id)
    two, _ = await factories.make_device(owner_conn, t.client_id)
    op, viewer = t.users["operator"], t.users["viewer"]
    admin = t.users["client"]
    for device in (one, two):
        await assign(owner_conn, t.client_id, op.user_id, device, "operate")
        await assign(owner_conn, t.client_id, viewer.user_id, device, "manage")
    three, _ = await factories.make_device(owner_conn, t.client_id)
    await assign(owner_conn, t.client_id, op.user_id, three, "view")
    # The administrator sends anything, no grant needed.
    assert await _code(s.SendCommand(send_request(one), metadata=admin.md)) is grpc.StatusCode.OK
    # An operator without a grant: refused; with a grant on device one only: one, not two.
    assert (
        await _code(s.SendCommand(send_request(one), metadata=op.md))
        is grpc.StatusCode.PERMISSION_DENIED
    )
    await s.GrantCommandPermission(
        pb.GrantCommandPermissionRequest(
            user_id=str(op.user_id), command_permission="power_management", device_id=str(one)
        ),
        metadata=admin.md,
    )
    assert await _code(s.SendCommand(send_request(one), metadata=op.md)) is grpc.StatusCode.OK
    assert (
        await _code(s.SendCommand(send_request(two), metadata=op.md))
        is grpc.StatusCode.PERMISSION_DENIED
    )
    # A grant on every device covers two; a VIEW assignment still allows no sending.
    await s.GrantCommandPermission(
        pb.GrantCommandPermissionRequest(
            user_id=str(op.user_id), command_permission="power_management"
        ),
        metadata=admin.md,
    )
    assert await _code(s.SendCommand(send_request(two), metadata=op.md)) is grpc.StatusCode.OK
    assert (
        await _code(s.SendCommand(send_request(three), metadata=op.md))
        is grpc.StatusCode.PERMISSION_DENIED
    )
    # Another permission's template is still refused.
    assert (
        await _code(s.SendCommand(send_request(one, "ping"), metadata=op.md))
        is grpc.StatusCode.PERMISSION_DENIED
    )
    # A viewer never sends, whatever it is granted and however it is assigned.
    await s.GrantCommandPermission(
        pb.GrantCommandPermissionRequest(
            user_id=str(viewer.user_id), command_permission="power_management"
        ),
        metadata=admin.md,
    )
    assert (
        await _code(s.SendCommand(send_request(one), metadata=viewer.md))
        is grpc.StatusCode.PERMISSION_DENIED
    )
    # A device the operator is not assigned to does not exist for them.
    four, _ = await factories.make_device(owner_conn, t.client_id)
    assert (
        await _code(s.SendCommand(send_request(four), metadata=op.md)) is grpc.StatusCode.NOT_FOUND
    )


async def test_delegation_chain_scope_expiry_and_revocation_of_the_whole_chain(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    t = await make_tenant(grpc_server, owner_conn)
    s = stub(grpc_server)
    admin, op, viewer = t.users["client"], t.users["operator"], t.users["viewer"]
    device, _ = await factories.make_device(owner_conn, t.client_id)
    other_device, _ = await factories.make_device(owner_conn, t.client_id)
    third = await factories.make_user(owner_conn, t.client_id, role="operator")
    soon = datetime.now(UTC) + timedelta(days=1)
    later = soon + timedelta(days=1)

    def ts(when: datetime) -> timestamp_pb2.Timestamp:
        out = timestamp_pb2.Timestamp()
        out.FromDatetime(when)
        return out

    def grant(to: uuid.UUID, device_id: uuid.UUID | None = None, expire: datetime | None = None,
              delegate: bool = False) -> pb.GrantCommandPermissionRequest:  # fmt: skip
        request = pb.GrantCommandPermissionRequest(
            user_id=str(to), command_permission="relay_control",
            device_id=str(device_id) if device_id else "", can_delegate=delegate,
        )  # fmt: skip
        if expire:
            request.expire_time.CopyFrom(ts(expire))
        return request

    # Depth 0: the operator holds nothing and may grant nothing.
    assert await _code(s.GrantCommandPermission(grant(viewer.user_id), metadata=op.md)) is (
        grpc.StatusCode.PERMISSION_DENIED
    )
    # Depth 1: the admin grants the operator every device, delegable, until `soon`.
    root = (
        await s.GrantCommandPermission(
            grant(op.user_id, expire=soon, delegate=True), metadata=admin.md
        )
    ).grant
    # A second grant of the same (user, permission, scope): ALREADY_EXISTS.
    assert await _code(s.GrantCommandPermission(grant(op.user_id), metadata=admin.md)) is (
        grpc.StatusCode.ALREADY_EXISTS
    )
    # Depth 2: the operator delegates a narrower scope, not a later expiry, not unbounded.
    assert await _code(
        s.GrantCommandPermission(grant(viewer.user_id, device, later), metadata=op.md)
    ) is (grpc.StatusCode.PERMISSION_DENIED)
    assert await _code(s.GrantCommandPermission(grant(viewer.user_id, device), metadata=op.md)) is (
        grpc.StatusCode.PERMISSION_DENIED
    )
    child = (
        await s.GrantCommandPermission(grant(viewer.user_id, device, soon, True), metadata=op.md)
    ).grant
    assert child.parent_grant_id == root.id
    # Depth 3: the viewer delegates the same device on, but not a wider scope.
    assert await _code(
        s.GrantCommandPermission(grant(third, other_device, soon), metadata=viewer.md)
    ) is (grpc.StatusCode.PERMISSION_DENIED)
    grandchild = (
        await s.GrantCommandPermission(grant(third, device, soon), metadata=viewer.md)
    ).grant
    assert grandchild.parent_grant_id == child.id
    # Revoking the root revokes the chain at once, and keeps it as history.
    reply = await s.RevokeCommandGrant(pb.RevokeCommandGrantRequest(id=root.id), metadata=admin.md)
    assert reply.revoked_count == 3
    live = await s.ListCommandGrants(pb.ListCommandGrantsRequest(), metadata=admin.md)
    assert {g.id for g in live.grants} & {root.id, child.id, grandchild.id} == set()
    history = await s.ListCommandGrants(
        pb.ListCommandGrantsRequest(show_revoked=True), metadata=admin.md
    )
    revoked = {g.id: g for g in history.grants}
    for g in (root, child, grandchild):
        assert revoked[g.id].HasField("revoke_time")
        assert revoked[g.id].revoked_by == str(admin.user_id)
    # The revoked delegate can delegate no more.
    assert await _code(
        s.GrantCommandPermission(grant(third, device, soon), metadata=viewer.md)
    ) is (grpc.StatusCode.PERMISSION_DENIED)


# -- bad input ------------------------------------------------------------------------------


async def test_parameters_failing_the_schema_name_each_bad_field(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    t = await make_tenant(grpc_server, owner_conn)
    device, _ = await factories.make_device(owner_conn, t.client_id)
    params = struct_pb2.Struct()
    params.update({"delay_s": 99999, "bogus": 1})
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stub(grpc_server).SendCommand(
            send_request(device, parameters=params), metadata=t.users["client"].md
        )
    code, details = error_of(failure.value)
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert "BadRequest" in details
    bad = violations(failure.value)
    assert set(bad) == {"parameters.delay_s", "parameters.bogus"}


async def test_a_template_schema_is_checked_when_saved(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    t = await make_tenant(grpc_server, owner_conn)
    s = stub(grpc_server)
    md = t.users["client"].md

    def template(
        schema: dict[str, Any], defaults: dict[str, Any] | None = None
    ) -> pb.CreateCommandTemplateRequest:
        out = pb.CommandTemplate(code="blink", name="Blink", command_permission="basic_control")
        out.parameters_schema.update(schema)
        out.default_parameters.update(defaults or {})
        return pb.CreateCommandTemplateRequest(template=out)

    for schema in (
        {"type": "object", "properties": {"a": {"type": "strin"}}},  # not a JSON Schema
        {"type": "object", "properties": {"a": {"$ref": "https://example.com/x.json"}}},
        {"type": "object", "properties": {"a": {"$ref": "file:///etc/passwd"}}},
        {"type": "object", "properties": {"a": {"type": "string", "pattern": "(?=a)"}}},
        {"type": "array"},
    ):
        assert await _code(s.CreateCommandTemplate(template(schema), metadata=md)) is (
            grpc.StatusCode.INVALID_ARGUMENT
        ), schema
    ok = {"type": "object", "properties": {"times": {"type": "integer", "maximum": 10}}}
    assert await _code(s.CreateCommandTemplate(template(ok, {"times": 11}), metadata=md)) is (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    created = (await s.CreateCommandTemplate(template(ok, {"times": 3}), metadata=md)).template
    assert created.client_id == str(t.client_id)
    # A tenant's own code shadows nothing else's and is what SendCommand finds by code.
    device, _ = await factories.make_device(owner_conn, t.client_id)
    sent = await s.SendCommand(send_request(device, "blink"), metadata=md)
    assert sent.command.template_id == created.id
    assert dict(sent.command.parameters) == {"times": 3}
    # Disabled: no longer sendable.
    await s.UpdateCommandTemplate(
        pb.UpdateCommandTemplateRequest(
            template=pb.CommandTemplate(id=created.id, enabled=False),
            update_mask=field_mask_pb2.FieldMask(paths=["enabled"]),
        ),
        metadata=md,
    )
    assert await _code(s.SendCommand(send_request(device, "blink"), metadata=md)) is (
        grpc.StatusCode.FAILED_PRECONDITION
    )
    # Operators may not write templates.
    assert (
        await _code(s.CreateCommandTemplate(template(ok), metadata=t.users["operator"].md))
        is grpc.StatusCode.PERMISSION_DENIED
    )


async def test_a_confirmation_naming_the_device_is_needed_where_the_permission_says_so(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    t = await make_tenant(grpc_server, owner_conn)
    device, serial = await factories.make_device(owner_conn, t.client_id)
    s = stub(grpc_server)
    md = t.users["client"].md
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await s.SendCommand(send_request(device, "factory_reset"), metadata=md)
    assert "confirmation" in violations(failure.value)
    params = struct_pb2.Struct()
    params.update({"confirm": True})
    reply = await s.SendCommand(
        send_request(device, "factory_reset", confirmation=serial, parameters=params), metadata=md
    )
    assert reply.command.status == pb.COMMAND_STATUS_PENDING


async def test_a_batch_reports_each_device_and_repeats_nothing(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    t = await make_tenant(grpc_server, owner_conn)
    other = await make_tenant(grpc_server, owner_conn)
    s = stub(grpc_server)
    md = t.users["client"].md
    one, _ = await factories.make_device(owner_conn, t.client_id)
    off, _ = await factories.make_device(owner_conn, t.client_id, status="disabled")
    foreign, _ = await factories.make_device(owner_conn, other.client_id)
    request = pb.BatchSendCommandRequest(
        device_ids=[str(one), str(off), str(foreign)], template_code="ping", idempotency_key="b1"
    )
    first = await s.BatchSendCommand(request, metadata=md)
    assert [(r.device_id, r.code) for r in first.results] == [
        (str(one), "OK"),
        (str(off), "FAILED_PRECONDITION"),
        (str(foreign), "NOT_FOUND"),
    ]
    again = await s.BatchSendCommand(request, metadata=md)
    assert again.results[0].command.id == first.results[0].command.id
    listed = await s.ListCommands(pb.ListCommandsRequest(device_id=str(one)), metadata=md)
    assert len(listed.commands) == 1
    too_many = pb.BatchSendCommandRequest(
        device_ids=[str(uuid.uuid4()) for _ in range(1001)], template_code="ping"
    )
    assert await _code(s.BatchSendCommand(too_many, metadata=md)) is (
        grpc.StatusCode.INVALID_ARGUMENT
    )


async def test_a_command_permission_limited_to_roles_refuses_the_others(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    t = await make_tenant(grpc_server, owner_conn)
    s = stub(grpc_server)
    device, _ = await factories.make_device(owner_conn, t.client_id)
    op, admin = t.users["operator"], t.users["client"]
    await assign(owner_conn, t.client_id, op.user_id, device, "operate")
    await s.GrantCommandPermission(
        pb.GrantCommandPermissionRequest(user_id=str(op.user_id), command_permission="diagnostics"),
        metadata=admin.md,
    )
    request = send_request(device, "get_config")
    assert await _code(s.SendCommand(request, metadata=op.md)) is grpc.StatusCode.OK
    async with tenant_transaction(owner_conn, None, staff=True):
        await owner_conn.execute(
            "UPDATE command_permissions SET allowed_roles = '{client}' WHERE code = 'diagnostics'"
        )
    try:
        assert await _code(s.SendCommand(request, metadata=op.md)) is (
            grpc.StatusCode.PERMISSION_DENIED
        )
        assert await _code(s.SendCommand(request, metadata=admin.md)) is grpc.StatusCode.OK
    finally:
        async with tenant_transaction(owner_conn, None, staff=True):
            await owner_conn.execute(
                "UPDATE command_permissions SET allowed_roles = NULL WHERE code = 'diagnostics'"
            )
