"""A file store in a local directory, for single-node setups (LIFEBOX_FILES_STORE=local).

Only the serve process on this machine sees the bytes, and a database backup does not
include them: back up the directory too. An upload writes ``<key>.part`` and renames it into
place once fsynced (just before the upload commits); an aborted upload removes it.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

import asyncpg

from lifebox_grpc.errors import NotFound
from lifebox_grpc.files.storage import Opener

READ_BYTES = 256 * 1024


class _FileWriter:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.part = path.with_name(path.name + ".part")
        self.handle: BinaryIO | None = None

    async def append(self, data: bytes) -> None:
        handle = self.handle or await self._open()
        await asyncio.to_thread(handle.write, data)

    async def _open(self) -> BinaryIO:
        self.part.parent.mkdir(parents=True, exist_ok=True)
        self.handle = await asyncio.to_thread(_create, self.part)
        return self.handle

    async def finish(self) -> None:
        handle = self.handle or await self._open()  # an empty file still gets one
        await asyncio.to_thread(_sync_close, handle)
        os.replace(self.part, self.path)

    async def abort(self) -> None:
        if self.handle is not None and not self.handle.closed:
            self.handle.close()
        for path in (self.part, self.path):
            path.unlink(missing_ok=True)


def _create(path: Path) -> BinaryIO:
    return open(path, "xb")


def _sync_close(handle: BinaryIO) -> None:
    handle.flush()
    os.fsync(handle.fileno())
    handle.close()


def _open_at(path: Path, offset: int) -> BinaryIO:
    try:
        handle = open(path, "rb")  # noqa: SIM115 (closed by read)
    except FileNotFoundError as exc:
        raise NotFound("the file's bytes are gone (deleted while being read?)") from exc
    handle.seek(offset)
    return handle


class LocalStore:
    """Bytes as files under ``root``, one per storage key."""

    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        # Keys are made by new_storage_key (two UUIDs): no way out of root.
        client, _, file = key.partition("/")
        return self.root / str(uuid.UUID(client)) / str(uuid.UUID(file))

    def writer(self, conn: asyncpg.Connection, client_id: uuid.UUID, key: str) -> _FileWriter:
        return _FileWriter(self._path(key))

    async def read(
        self, opener: Opener, key: str, offset: int, length: int
    ) -> AsyncIterator[bytes]:
        handle = await asyncio.to_thread(_open_at, self._path(key), offset)
        try:
            left = length
            while left > 0:
                piece = await asyncio.to_thread(handle.read, min(READ_BYTES, left))
                if not piece:
                    raise NotFound("the file's bytes are gone (deleted while being read?)")
                left -= len(piece)
                yield piece
        finally:
            handle.close()

    async def delete(self, conn: asyncpg.Connection, key: str) -> None:
        self._path(key).unlink(missing_ok=True)
