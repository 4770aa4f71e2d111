"""DownloadFile ranges, DeleteFile removing the bytes, ListFiles paging and filters, and the
local-directory store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import grpc
import pytest

from lifebox.v1 import files_pb2 as pb
from lifebox_grpc.runtime.mosquitto import EmbeddedMosquitto
from tests.helpers import factories
from tests.helpers.files import download, leftovers, metadata, png_of, stub, upload
from tests.helpers.grpc import (
    Server,
    close_server,
    make_tenant,
    open_server,
    server_settings,
    violations,
)
from tests.helpers.services import Database
from tests.helpers.wait import async_wait_until


async def test_a_range_download_sends_exactly_those_bytes(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    t = await make_tenant(grpc_server, owner_conn)
    s, md = stub(grpc_server), t.users["client"].md
    data = bytes(png_of(16)) + bytes(range(256)) * 3000  # 768016 bytes over three chunk rows
    f = await upload(s, md, data)
    for offset, length in ((0, 10), (262_000, 1_000), (262_144, 262_144), (700_000, 0),
                           (len(data) - 5, 100), (len(data), 0)):  # fmt: skip
        meta, body = await download(s, md, f.id, offset, length)
        want = data[offset : offset + length] if length else data[offset:]
        assert body == want, (offset, length)
        assert meta.id == f.id
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await download(s, md, f.id, len(data) + 1)
    assert exc.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "offset" in violations(exc.value)
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await download(s, md, f.id, -1, -1)
    assert set(violations(exc.value)) == {"offset", "length"}


async def test_delete_removes_the_row_and_the_bytes(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    t = await make_tenant(grpc_server, owner_conn)
    s, md = stub(grpc_server), t.users["client"].md
    f = await upload(s, md, png_of(300_000))
    assert await leftovers(owner_conn, t.client_id) == (1, 2, 300_000)
    await s.DeleteFile(pb.DeleteFileRequest(id=f.id), metadata=md)
    assert await leftovers(owner_conn, t.client_id) == (0, 0, 0)
    for call in (
        s.GetFile(pb.GetFileRequest(id=f.id), metadata=md),
        s.DeleteFile(pb.DeleteFileRequest(id=f.id), metadata=md),
        download(s, md, f.id),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await call
        assert exc.value.code() is grpc.StatusCode.NOT_FOUND


async def test_list_files_pages_newest_first_and_filters(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    t = await make_tenant(grpc_server, owner_conn)
    s, md = stub(grpc_server), t.users["client"].md
    device, _ = await factories.make_device(owner_conn, t.client_id)
    ids = [(await upload(s, md, name=f"{i}.png")).id for i in range(5)]
    on_device = await upload(s, md, b"a,b\n", name="d.csv", content_type="text/csv",
                             device_id=str(device))  # fmt: skip
    seen, token = [], ""
    while True:
        reply = await s.ListFiles(pb.ListFilesRequest(page_size=2, page_token=token), metadata=md)
        seen += [f.id for f in reply.files]
        token = reply.next_page_token
        if not token:
            break
    assert seen == [on_device.id, *reversed(ids)]
    reply = await s.ListFiles(pb.ListFilesRequest(device_id=str(device)), metadata=md)
    assert [f.id for f in reply.files] == [on_device.id]
    reply = await s.ListFiles(pb.ListFilesRequest(content_type="text/csv"), metadata=md)
    assert [f.id for f in reply.files] == [on_device.id]
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await s.ListFiles(
            pb.ListFilesRequest(page_token="junk", device_id="x", page_size=-1), metadata=md
        )
    assert set(violations(exc.value)) == {"page_token", "device_id", "page_size"}


@pytest.fixture
async def local_server(
    database: Database, broker: EmbeddedMosquitto, tmp_path: Path
) -> AsyncIterator[Server]:
    """A server whose uploads go to a local directory, with a small size cap."""
    server = await open_server(
        server_settings(
            database, broker, files_store="local", files_dir=tmp_path, files_max_bytes=600_000
        )
    )
    yield server
    await close_server(server)


def _stored(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


async def test_the_local_store_keeps_bytes_in_its_directory(
    local_server: Server, owner_conn: asyncpg.Connection, tmp_path: Path
) -> None:
    t = await make_tenant(local_server, owner_conn)
    s, md = stub(local_server), t.users["client"].md
    data = png_of(500_000)
    f = await upload(s, md, data)
    (path,) = _stored(tmp_path)
    assert path.read_bytes() == data
    assert (await download(s, md, f.id, 100, 1000))[1] == data[100:1100]
    assert await leftovers(owner_conn, t.client_id) == (1, 0, 500_000)
    # Past the cap: nothing stays on disk.
    with pytest.raises(grpc.aio.AioRpcError):
        await upload(s, md, png_of(600_001))
    assert _stored(tmp_path) == [path]
    await s.DeleteFile(pb.DeleteFileRequest(id=f.id), metadata=md)
    assert _stored(tmp_path) == []
    assert await leftovers(owner_conn, t.client_id) == (0, 0, 0)


async def test_a_cancelled_upload_to_the_local_store_leaves_no_partial_file(
    local_server: Server, owner_conn: asyncpg.Connection, tmp_path: Path
) -> None:
    t = await make_tenant(local_server, owner_conn)
    s = stub(local_server)

    async def half() -> AsyncIterator[pb.UploadFileRequest]:
        yield metadata()
        yield pb.UploadFileRequest(chunk=png_of(100_000))
        await asyncio.Event().wait()

    call = s.UploadFile(half(), metadata=t.users["client"].md)

    async def partial() -> list[Path]:
        return [p for p in _stored(tmp_path) if p.name.endswith(".part")]

    await async_wait_until(partial, what="the upload's partial file")
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call

    async def gone() -> bool:
        return not _stored(tmp_path)

    await async_wait_until(gone, what="the partial file to be removed")
    assert await leftovers(owner_conn, t.client_id) == (0, 0, 0)
