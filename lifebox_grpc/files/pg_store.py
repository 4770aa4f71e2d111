"""The default file store: bytes in PostgreSQL, in ``file_chunks`` rows (0095).

Every serve replica reads the same bytes and a database backup includes them. Whatever size
the client's messages have, rows hold :data:`CHUNK_BYTES` (the last one less), keyed by the
offset of their first byte, so a range read starts at the row holding its first byte.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg

from lifebox_grpc.errors import NotFound
from lifebox_grpc.files.storage import Opener

CHUNK_BYTES = 256 * 1024
# Rows fetched per read of a download: bounds the memory a download holds.
ROWS_PER_READ = 4

_INSERT = (
    "INSERT INTO file_chunks (client_id, storage_key, start_byte, data) VALUES ($1, $2, $3, $4)"
)
_READ = (
    "SELECT start_byte, data FROM file_chunks WHERE storage_key = $1 "
    "AND start_byte > $2 - $4::bigint AND start_byte < $3 ORDER BY start_byte LIMIT $5"
)
_DELETE = "DELETE FROM file_chunks WHERE storage_key = $1"


class _ChunkWriter:
    def __init__(self, conn: asyncpg.Connection, client_id: uuid.UUID, key: str) -> None:
        self.conn = conn
        self.client_id = client_id
        self.key = key
        self.buffer = bytearray()
        self.written = 0

    async def append(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= CHUNK_BYTES:
            await self._flush(CHUNK_BYTES)

    async def _flush(self, size: int) -> None:
        piece = bytes(self.buffer[:size])
        del self.buffer[:size]
        await self.conn.execute(_INSERT, self.client_id, self.key, self.written, piece)
        self.written += len(piece)

    async def finish(self) -> None:
        if self.buffer:
            await self._flush(len(self.buffer))

    async def abort(self) -> None:
        # The rows are in the upload's transaction: its ROLLBACK removes them.
        self.buffer.clear()


class PostgresStore:
    """Bytes as chunk rows in the upload's own transaction."""

    name = "postgres"

    def writer(self, conn: asyncpg.Connection, client_id: uuid.UUID, key: str) -> _ChunkWriter:
        return _ChunkWriter(conn, client_id, key)

    async def read(
        self, opener: Opener, key: str, offset: int, length: int
    ) -> AsyncIterator[bytes]:
        end = offset + length
        position = offset
        while position < end:
            async with opener() as conn:
                rows = await conn.fetch(_READ, key, position, end, CHUNK_BYTES, ROWS_PER_READ)
            if not rows:
                raise NotFound("the file's bytes are gone (deleted while being read?)")
            for row in rows:
                start, data = row["start_byte"], row["data"]
                piece = data[max(position - start, 0) : end - start]
                if not piece:
                    continue
                yield piece
                position = start + max(position - start, 0) + len(piece)

    async def delete(self, conn: asyncpg.Connection, key: str) -> None:
        # Deleting the files row cascades to its chunks; this is for a row-less leftover.
        await conn.execute(_DELETE, key)
