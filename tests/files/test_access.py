"""Who may do what with files: the two-tenant matrix over every FileService method, the
roles (viewer, operator, client administrator, staff), and page-attached files following
the page's shares."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import grpc
import pytest

from lifebox.v1 import dashboards_pb2 as dpb
from lifebox.v1 import files_pb2 as pb
from lifebox.v1 import files_pb2_grpc
from lifebox_grpc.services.registry import method_names
from tests.helpers import dashboards, factories
from tests.helpers.files import download, lapse_share, leftovers, stub, upload
from tests.helpers.grpc import (
    Account,
    Server,
    Tenant,
    make_account,
    make_staff,
    make_tenant,
    sign_in,
    violations,
)

Stub = files_pb2_grpc.FileServiceStub
_SERVICE = "/lifebox.v1.FileService/"


async def _code(call: Awaitable[Any]) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


@dataclass
class Other:
    """Tenant B's file resources, named by tenant A's administrator."""

    client: uuid.UUID
    file: str
    page: str
    device: uuid.UUID


async def other_tenant(server: Server, conn: asyncpg.Connection, b: Tenant) -> Other:
    admin = b.users["client"]
    page = (await dashboards.make_page(dashboards.stub(server), admin.md)).id
    device, _ = await factories.make_device(conn, b.client_id)
    f = await upload(
        stub(server), admin.md, access_level=pb.FILE_ACCESS_LEVEL_PAGE, page_id=page,
        device_id=str(device),
    )  # fmt: skip
    return Other(b.client_id, f.id, page, device)


Case = Callable[[Stub, Any, Other], Awaitable[None]]


async def _nf(call: Awaitable[Any]) -> None:
    assert await _code(call) is grpc.StatusCode.NOT_FOUND


async def _upload(s: Stub, md: Any, o: Other) -> None:
    await _nf(upload(s, md, access_level=pb.FILE_ACCESS_LEVEL_PAGE, page_id=o.page))
    await _nf(upload(s, md, device_id=str(o.device)))


async def _list(s: Stub, md: Any, o: Other) -> None:
    for request in (
        pb.ListFilesRequest(page_size=500),
        pb.ListFilesRequest(page_id=o.page),
        pb.ListFilesRequest(device_id=str(o.device)),
    ):
        reply = await s.ListFiles(request, metadata=md)
        assert o.file not in {f.id for f in reply.files}


async def _quota(s: Stub, md: Any, o: Other) -> None:
    assert (await s.GetFileQuota(pb.GetFileQuotaRequest(), metadata=md)).used_bytes == 0
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await s.GetFileQuota(pb.GetFileQuotaRequest(client_id=str(o.client)), metadata=md)
    assert violations(exc.value) == {"client_id": "only staff name a client"}


MATRIX: dict[str, Case] = {
    "UploadFile": _upload,
    "GetFile": lambda s, md, o: _nf(s.GetFile(pb.GetFileRequest(id=o.file), metadata=md)),
    "ListFiles": _list,
    "DownloadFile": lambda s, md, o: _nf(download(s, md, o.file)),
    "DeleteFile": lambda s, md, o: _nf(s.DeleteFile(pb.DeleteFileRequest(id=o.file), metadata=md)),
    "GetFileQuota": _quota,
}


def test_the_matrix_covers_every_file_method() -> None:
    ours = {m.removeprefix(_SERVICE) for m in method_names() if m.startswith(_SERVICE)}
    assert ours == set(MATRIX)


@pytest.mark.parametrize("method", sorted(MATRIX))
async def test_naming_another_tenants_files_is_not_found(
    grpc_server: Server, owner_conn: asyncpg.Connection, method: str
) -> None:
    a = await make_tenant(grpc_server, owner_conn)
    b = await make_tenant(grpc_server, owner_conn)
    other = await other_tenant(grpc_server, owner_conn, b)
    await MATRIX[method](stub(grpc_server), a.users["client"].md, other)
    files, _, used = await leftovers(owner_conn, b.client_id)
    assert (files, used > 0) == (1, True)
    assert await leftovers(owner_conn, a.client_id) == (0, 0, 0)


async def test_roles_private_tenant_wide_and_staff(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    t = await make_tenant(grpc_server, owner_conn)
    s = stub(grpc_server)
    admin, op, viewer = t.users["client"], t.users["operator"], t.users["viewer"]
    private = await upload(s, op.md, name="mine.png")
    tenant_wide = await upload(s, op.md, name="ours.png", access_level=pb.FILE_ACCESS_LEVEL_TENANT)

    def get(md: Any, f: pb.File) -> Awaitable[Any]:
        return s.GetFile(pb.GetFileRequest(id=f.id), metadata=md)

    # A viewer reads tenant-wide files, not another's private one, and uploads nothing.
    assert await _code(get(viewer.md, tenant_wide)) is grpc.StatusCode.OK
    assert await _code(get(viewer.md, private)) is grpc.StatusCode.NOT_FOUND
    assert await _code(download(s, viewer.md, private.id)) is grpc.StatusCode.NOT_FOUND
    assert await _code(upload(s, viewer.md)) is grpc.StatusCode.PERMISSION_DENIED
    assert (
        await _code(s.DeleteFile(pb.DeleteFileRequest(id=tenant_wide.id), metadata=viewer.md))
        is grpc.StatusCode.PERMISSION_DENIED
    )
    listed = await s.ListFiles(pb.ListFilesRequest(), metadata=viewer.md)
    assert [f.id for f in listed.files] == [tenant_wide.id]
    quota = await s.GetFileQuota(pb.GetFileQuotaRequest(), metadata=viewer.md)
    assert quota.used_bytes == private.size_bytes + tenant_wide.size_bytes
    # Another operator sees the tenant's file, may not delete it.
    other_op = (await another(grpc_server, owner_conn, t, "operator")).md
    assert await _code(get(other_op, tenant_wide)) is grpc.StatusCode.OK
    assert await _code(get(other_op, private)) is grpc.StatusCode.NOT_FOUND
    assert (
        await _code(s.DeleteFile(pb.DeleteFileRequest(id=tenant_wide.id), metadata=other_op))
        is grpc.StatusCode.PERMISSION_DENIED
    )
    # The client administrator sees and lists every file of the tenant and deletes any.
    assert await _code(get(admin.md, private)) is grpc.StatusCode.OK
    listed = await s.ListFiles(pb.ListFilesRequest(), metadata=admin.md)
    assert {f.id for f in listed.files} == {private.id, tenant_wide.id}
    await s.DeleteFile(pb.DeleteFileRequest(id=private.id), metadata=admin.md)
    # Staff see every tenant's files, name the tenant to upload to or read the quota of.
    staff = await make_staff(grpc_server, owner_conn, "admin")
    assert await _code(get(staff.md, tenant_wide)) is grpc.StatusCode.OK
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await upload(s, staff.md)
    assert "metadata.client_id" in violations(exc.value)
    f = await upload(s, staff.md, client_id=str(t.client_id))
    assert f.client_id == str(t.client_id)
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await s.GetFileQuota(pb.GetFileQuotaRequest(), metadata=staff.md)
    assert "client_id" in violations(exc.value)
    quota = await s.GetFileQuota(
        pb.GetFileQuotaRequest(client_id=str(t.client_id)), metadata=staff.md
    )
    assert quota.used_bytes == tenant_wide.size_bytes + f.size_bytes
    # The owner deletes their own.
    await s.DeleteFile(pb.DeleteFileRequest(id=tenant_wide.id), metadata=op.md)


async def another(server: Server, conn: asyncpg.Connection, t: Tenant, role: str) -> Account:
    """One more signed-in user of ``t``."""
    return await sign_in(server, await make_account(conn, role, t.client_id))


async def test_a_page_attached_file_follows_the_pages_shares(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    t = await make_tenant(grpc_server, owner_conn)
    s = stub(grpc_server)
    op, viewer = t.users["operator"], t.users["viewer"]
    pages = dashboards.stub(grpc_server)
    page = (await dashboards.make_page(pages, op.md)).id
    # Attaching takes editing the page (its owner here).
    f = await upload(s, op.md, access_level=pb.FILE_ACCESS_LEVEL_PAGE, page_id=page)
    assert f.page_id == page
    recipient_user = await another(grpc_server, owner_conn, t, "viewer")
    lapsed_user = await another(grpc_server, owner_conn, t, "viewer")
    recipient, lapsed = recipient_user.md, lapsed_user.md
    for user in (recipient_user, lapsed_user):
        await pages.SharePage(
            dpb.SharePageRequest(
                page_id=page, user_id=str(user.user_id), permission=dpb.SHARE_PERMISSION_VIEW
            ),
            metadata=op.md,
        )
    await lapse_share(owner_conn, t.client_id, page, lapsed_user.user_id)

    async def sees(md: Any) -> bool:
        listed = await s.ListFiles(pb.ListFilesRequest(), metadata=md)
        listed_it = f.id in {x.id for x in listed.files}
        code = await _code(s.GetFile(pb.GetFileRequest(id=f.id), metadata=md))
        assert listed_it == (code is grpc.StatusCode.OK)  # List and Get agree
        return listed_it

    assert await sees(recipient)
    assert (await download(s, recipient, f.id))[0].id == f.id
    assert not await sees(viewer.md)  # not shared with
    assert not await sees(lapsed)  # the share expired
    # A view share does not let the recipient attach files to the page.
    assert (
        await _code(upload(s, recipient, access_level=pb.FILE_ACCESS_LEVEL_PAGE, page_id=page))
        is grpc.StatusCode.PERMISSION_DENIED
    )
    # The page goes: the file stays, seen by its owner only.
    await pages.DeletePage(dpb.DeletePageRequest(page_id=page), metadata=op.md)
    assert not await sees(recipient)
    assert await sees(op.md)


async def test_a_file_about_a_device_is_seen_only_by_those_who_see_the_device(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    t = await make_tenant(grpc_server, owner_conn)
    s = stub(grpc_server)
    admin, viewer = t.users["client"], t.users["viewer"]
    device, _ = await factories.make_device(owner_conn, t.client_id)
    f = await upload(s, admin.md, device_id=str(device), access_level=pb.FILE_ACCESS_LEVEL_TENANT)

    async def sees() -> tuple[grpc.StatusCode, bool]:
        code = await _code(s.GetFile(pb.GetFileRequest(id=f.id), metadata=viewer.md))
        listed = await s.ListFiles(pb.ListFilesRequest(), metadata=viewer.md)
        return code, f.id in {x.id for x in listed.files}

    # Tenant-wide, but about a device not assigned to the viewer: not theirs to see.
    assert await sees() == (grpc.StatusCode.NOT_FOUND, False)
    assert await _code(download(s, viewer.md, f.id)) is grpc.StatusCode.NOT_FOUND
    await dashboards.assign(owner_conn, t.client_id, viewer.user_id, device)
    assert await sees() == (grpc.StatusCode.OK, True)
