"""FileService test helpers: a stub, uploads, downloads, what a tenant's files left behind,
and bytes of known types."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from lifebox.v1 import files_pb2 as pb
from lifebox.v1 import files_pb2_grpc
from lifebox_grpc.store.pool import tenant_transaction
from tests.helpers.grpc import Server

# A 1x1 PNG (signature, IHDR, IDAT, IEND).
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)
# The first bytes of a 64-bit ELF executable and of a Windows PE (MZ) one.
ELF = b"\x7fELF\x02\x01\x01\x00" + bytes(56) + b"\x02\x00\x3e\x00" * 64
PE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + bytes(240) + b"PE\x00\x00"


def stub(server: Server) -> files_pb2_grpc.FileServiceStub:
    return files_pb2_grpc.FileServiceStub(server.channel)


def metadata(
    name: str = "plan.png", content_type: str = "image/png", **kw: Any
) -> pb.UploadFileRequest:
    return pb.UploadFileRequest(
        metadata=pb.FileMetadata(name=name, content_type=content_type, **kw)
    )


async def parts(
    meta: pb.UploadFileRequest, data: bytes, chunk: int = 64 * 1024
) -> AsyncIterator[pb.UploadFileRequest]:
    yield meta
    for start in range(0, len(data), chunk):
        yield pb.UploadFileRequest(chunk=data[start : start + chunk])


async def upload(
    s: files_pb2_grpc.FileServiceStub,
    md: Any,
    data: bytes = PNG,
    chunk: int = 64 * 1024,
    **meta: Any,
) -> pb.File:
    reply = await s.UploadFile(parts(metadata(**meta), data, chunk), metadata=md, timeout=30)
    return reply.file


async def download(
    s: files_pb2_grpc.FileServiceStub, md: Any, file_id: str, offset: int = 0, length: int = 0
) -> tuple[pb.File, bytes]:
    meta = pb.File()
    out = bytearray()
    async for message in s.DownloadFile(
        pb.DownloadFileRequest(id=file_id, offset=offset, length=length), metadata=md, timeout=30
    ):
        if message.HasField("file"):
            meta = message.file
        assert message.offset == offset + len(out)
        out += message.data
    return meta, bytes(out)


def png_of(size: int) -> bytes:
    """PNG-signed bytes of ``size`` (the check reads signatures, not whole images)."""
    return (PNG + bytes(max(size - len(PNG), 0)))[:size]


async def leftovers(conn: asyncpg.Connection, client_id: uuid.UUID) -> tuple[int, int, int]:
    """(files rows, chunk rows, bytes counted as used) of a tenant."""
    async with tenant_transaction(conn, None, staff=True):
        row = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM files WHERE client_id = $1) AS files, "
            "(SELECT count(*) FROM file_chunks WHERE client_id = $1) AS chunks, "
            "(SELECT coalesce(sum(used_bytes), 0) FROM client_file_usage WHERE client_id = $1) "
            "AS used",
            client_id,
        )
    assert row is not None
    return int(row["files"]), int(row["chunks"]), int(row["used"])


async def set_quota(conn: asyncpg.Connection, client_id: uuid.UUID, quota: int) -> None:
    async with tenant_transaction(conn, None, staff=True):
        await conn.execute(
            "INSERT INTO client_file_usage (client_id, quota_bytes) VALUES ($1, $2) "
            "ON CONFLICT (client_id) DO UPDATE SET quota_bytes = $2",
            client_id,
            quota,
        )


async def lapse_share(
    conn: asyncpg.Connection, client_id: uuid.UUID, page_id: str, user_id: uuid.UUID
) -> None:
    """Make a live share of the page lapse (the API only shares until a future time)."""
    async with tenant_transaction(conn, client_id):
        await conn.execute(
            "UPDATE quick_view_page_shares SET expires_at = now() - interval '1 hour' "
            "WHERE page_id = $1 AND user_id = $2",
            uuid.UUID(page_id),
            user_id,
        )
