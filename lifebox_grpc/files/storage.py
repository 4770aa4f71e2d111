"""The file store interface.

A store keeps the bytes of a file under its ``storage_key``; the files row (metadata, access,
quota) is always in PostgreSQL. An upload writes through a :class:`BlobWriter` while the
upload's transaction is open and either finishes it (just before that transaction's COMMIT)
or aborts it, so a failed or cancelled upload leaves no bytes behind:

* :class:`~lifebox_grpc.files.pg_store.PostgresStore` writes chunk rows on the upload's own
  connection: COMMIT and ROLLBACK decide for row and bytes together.
* :class:`~lifebox_grpc.files.local_store.LocalStore` writes a temporary file, made durable
  and renamed into place by ``finish``, removed by ``abort``.

An S3-compatible store fits the same shape: ``writer`` starts a multipart upload (each
``append`` buffers to the 5 MiB part minimum and uploads a part), ``finish`` completes it,
``abort`` aborts it (plus a bucket lifecycle rule for uploads a crash left open); ``read``
is a ranged GET (``Range: bytes=offset-end``) streamed in pieces; ``delete`` a DELETE. It is
not implemented here.

Deleting runs after the row's deletion is committed (bytes without a row are harmless
garbage; a row without bytes would be a broken file).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Protocol

import asyncpg

# A scoped connection for a short piece of work (a page of chunks): the caller's tenant
# transaction, opened and closed per use so a slow download holds no connection between reads.
Opener = Callable[[], AbstractAsyncContextManager[asyncpg.Connection]]


class BlobWriter(Protocol):
    """The bytes of one upload, written in order."""

    async def append(self, data: bytes) -> None:
        """Add the next bytes."""

    async def finish(self) -> None:
        """Make the bytes durable; called right before the upload's transaction commits."""

    async def abort(self) -> None:
        """Forget every byte written (idempotent; also after ``finish`` if COMMIT failed)."""


class FileStorage(Protocol):
    """Keeps files' bytes by storage key."""

    name: str  # the files.store value of files it wrote

    def writer(self, conn: asyncpg.Connection, client_id: uuid.UUID, key: str) -> BlobWriter:
        """A writer for a new file; ``conn`` is the upload's open tenant transaction."""

    def read(self, opener: Opener, key: str, offset: int, length: int) -> AsyncIterator[bytes]:
        """The ``length`` bytes from ``offset`` (both within the file), in pieces."""

    async def delete(self, conn: asyncpg.Connection, key: str) -> None:
        """Remove the bytes (no error when they are already gone)."""


def new_storage_key(client_id: uuid.UUID) -> str:
    """A key no other file has; the tenant comes first so a store can list or bill by it."""
    return f"{client_id}/{uuid.uuid4()}"


def store_named(name: str, files_dir: Path) -> FileStorage:
    """The store called ``name`` (a files.store value)."""
    from lifebox_grpc.files.local_store import LocalStore
    from lifebox_grpc.files.pg_store import PostgresStore

    if name == PostgresStore.name:
        return PostgresStore()
    if name == LocalStore.name:
        return LocalStore(files_dir)
    raise ValueError(f"unknown file store {name!r}")
