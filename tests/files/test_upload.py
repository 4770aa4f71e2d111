"""UploadFile: what is stored, what is refused, and that a refused or interrupted upload
leaves no row, no chunk and no counted byte."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

import asyncpg
import grpc
import pytest

from lifebox.v1 import files_pb2 as pb
from lifebox_grpc.store import files as file_store
from lifebox_grpc.store.pool import tenant_transaction
from tests.helpers import factories
from tests.helpers.files import (
    ELF,
    PE,
    PNG,
    download,
    leftovers,
    metadata,
    parts,
    png_of,
    set_quota,
    stub,
    upload,
)
from tests.helpers.grpc import (
    Server,
    error_of,
    make_account,
    make_tenant,
    sign_in,
    violations,
)
from tests.helpers.services import Database
from tests.helpers.wait import async_wait_until


async def test_an_upload_is_stored_with_its_size_and_sha256_and_downloads_the_same(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    t = await make_tenant(grpc_server, owner_conn)
    s = stub(grpc_server)
    data = png_of(700_000)  # several 256 KiB chunk rows, sent in 64 KiB messages
    f = await upload(s, t.users["operator"].md, data, name="floor plan.png")
    assert (f.name, f.content_type, f.size_bytes) == ("floor plan.png", "image/png", len(data))
    assert f.sha256 == hashlib.sha256(data).hexdigest()
    assert f.owner_id == str(t.users["operator"].user_id)
    assert f.access_level == pb.FILE_ACCESS_LEVEL_PRIVATE
    meta, body = await download(s, t.users["operator"].md, f.id)
    assert body == data
    assert meta.id == f.id
    assert await leftovers(owner_conn, t.client_id) == (1, 3, len(data))


async def test_text_uploads_must_be_utf8_text(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    t = await make_tenant(grpc_server, owner_conn)
    s, md = stub(grpc_server), t.users["client"].md
    csv = "device,température\nA,21.5\n".encode()
    f = await upload(s, md, csv, name="t.csv", content_type="text/csv")
    assert f.size_bytes == len(csv)
    for bad in (b"caf\xe9\n", ELF):
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await upload(s, md, bad, name="t.txt", content_type="text/plain")
        assert exc.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "metadata.content_type" in violations(exc.value)


@pytest.mark.parametrize("executable", [ELF, PE], ids=["elf", "pe"])
async def test_a_renamed_executable_claiming_to_be_png_is_refused(
    grpc_server: Server, owner_conn: asyncpg.Connection, executable: bytes
) -> None:
    t = await make_tenant(grpc_server, owner_conn)
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await upload(stub(grpc_server), t.users["client"].md, executable + bytes(10_000))
    assert exc.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "are not image/png" in violations(exc.value)["metadata.content_type"]
    assert await leftovers(owner_conn, t.client_id) == (0, 0, 0)


async def test_bad_metadata_names_every_field(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    t = await make_tenant(grpc_server, owner_conn)
    s, md = stub(grpc_server), t.users["client"].md
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await upload(
            s, md, PNG, name="../x", content_type="application/x-sh",
            access_level=pb.FILE_ACCESS_LEVEL_PAGE, device_id="nope", client_id="x",
        )  # fmt: skip
    assert set(violations(exc.value)) == {
        "metadata.name",
        "metadata.content_type",
        "metadata.page_id",
        "metadata.device_id",
        "metadata.client_id",
    }

    async def chunk_first():  # type: ignore[no-untyped-def]
        yield pb.UploadFileRequest(chunk=PNG)

    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await s.UploadFile(chunk_first(), metadata=md)
    assert violations(exc.value) == {"metadata": "the first message must carry the file's metadata"}
    assert await leftovers(owner_conn, t.client_id) == (0, 0, 0)


async def test_past_the_size_cap_is_refused_leaving_nothing(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    t = await make_tenant(grpc_server, owner_conn)
    s, md = stub(grpc_server), t.users["client"].md
    cap = grpc_server.settings.files_max_bytes
    # Announced: refused before a byte is sent.
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await upload(s, md, PNG, expected_size_bytes=cap + 1)
    assert "chunk" in violations(exc.value)
    # Not announced: refused at the byte past the cap (the cap's worth was written, and
    # rolled back).
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await upload(s, md, png_of(cap + 1), chunk=1024 * 1024)
    assert exc.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "cap" in violations(exc.value)["chunk"]
    assert await leftovers(owner_conn, t.client_id) == (0, 0, 0)
    # Exactly the cap is fine.
    assert (await upload(s, md, png_of(cap), chunk=1024 * 1024)).size_bytes == cap


async def test_the_tenant_quota_holds_even_for_concurrent_uploads(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    t = await make_tenant(grpc_server, owner_conn)
    s, md = stub(grpc_server), t.users["client"].md
    await set_quota(owner_conn, t.client_id, 250_000)
    quota = await s.GetFileQuota(pb.GetFileQuotaRequest(), metadata=md)
    assert (quota.used_bytes, quota.limit_bytes) == (0, 250_000)
    # Three users' concurrent uploads of 100 kB (uploads are expensive calls: a user may
    # run two at once): two fit, one is refused.
    extra = await sign_in(grpc_server, await make_account(owner_conn, "operator", t.client_id))
    uploaders = [t.users["client"].md, t.users["operator"].md, extra.md]
    # Every stream ends only once all three have sent their bytes, so the three quota
    # checks meet; only the lock on the tenant's usage row keeps them from all passing.
    together = asyncio.Barrier(len(uploaders))

    async def held(i: int) -> AsyncIterator[pb.UploadFileRequest]:
        async for part in parts(metadata(name=f"{i}.png"), png_of(100_000)):
            yield part
        await together.wait()

    results = await asyncio.gather(
        *(s.UploadFile(held(i), metadata=who, timeout=30) for i, who in enumerate(uploaders)),
        return_exceptions=True,
    )
    results = [r.file if isinstance(r, pb.UploadFileResponse) else r for r in results]
    stored = [r for r in results if isinstance(r, pb.File)]
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert (len(stored), len(refused)) == (2, 1), results
    for exc in refused:
        code, details = error_of(exc)
        assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert details["ErrorInfo"].reason == "ERROR_REASON_QUOTA_EXCEEDED"
        assert details["QuotaFailure"].violations[0].subject == "files:tenant_bytes"
    assert await leftovers(owner_conn, t.client_id) == (2, 2, 200_000)
    quota = await s.GetFileQuota(pb.GetFileQuotaRequest(), metadata=md)
    assert quota.used_bytes == 200_000
    # Deleting frees the bytes.
    await s.DeleteFile(pb.DeleteFileRequest(id=stored[0].id), metadata=md)
    assert (await upload(s, md, png_of(100_000))).size_bytes == 100_000


async def test_an_upload_the_client_cancels_midway_leaves_no_file_and_no_row(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    t = await make_tenant(grpc_server, owner_conn)
    s, md = stub(grpc_server), t.users["client"].md
    sent = asyncio.Event()

    async def half() -> object:
        yield metadata()
        for _ in range(3):  # 768 KiB: chunk rows are written in the upload's transaction
            yield pb.UploadFileRequest(chunk=png_of(256 * 1024))
        sent.set()
        await asyncio.Event().wait()  # never finishes

    call = s.UploadFile(half(), metadata=md)
    await asyncio.wait_for(sent.wait(), 10)

    async def writing() -> bool:
        # The upload's transaction holds the chunks it wrote (uncommitted) while it runs.
        return bool(
            await owner_conn.fetchval(
                "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                "WHERE c.relname = 'file_chunks' AND l.mode = 'RowExclusiveLock'"
            )
        )

    await async_wait_until(writing, what="the upload's open transaction")
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call

    async def ended() -> bool:
        return not await writing()

    await async_wait_until(ended, what="the upload's transaction to end")
    assert await leftovers(owner_conn, t.client_id) == (0, 0, 0)


async def test_a_second_upload_of_the_tenant_waits_for_the_usage_lock(
    database: Database, app_conn: asyncpg.Connection, owner_conn: asyncpg.Connection
) -> None:
    client = await factories.make_client(owner_conn)
    await set_quota(owner_conn, client, 1000)  # the usage row exists already
    other = await asyncpg.connect(database.app_dsn)
    try:
        async with tenant_transaction(app_conn, client):
            await file_store.lock_usage(app_conn, client)

            async def second() -> file_store.Usage:
                async with tenant_transaction(other, client):
                    return await file_store.lock_usage(other, client)

            waiting = asyncio.create_task(second())

            async def blocked() -> bool:
                return bool(
                    await owner_conn.fetchval(
                        "SELECT count(*) FROM pg_locks WHERE NOT granted AND pid = $1",
                        other.get_server_pid(),
                    )
                )

            await async_wait_until(blocked, what="the second upload to wait for the lock")
            assert not waiting.done()
        assert (await asyncio.wait_for(waiting, 10)).used_bytes == 0
    finally:
        await other.close()
