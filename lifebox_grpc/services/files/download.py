"""FileService: DownloadFile, a file's bytes (or a range of them) by server streaming.

The file is found and its access checked once, then its store reads the range in pieces,
each read on a short scoped transaction of its own, so a slow reader holds no database
connection between messages.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from lifebox.v1 import files_pb2
from lifebox_grpc.auth.principal import require_principal
from lifebox_grpc.errors import ErrorCollector
from lifebox_grpc.services.common import parse_uuid, scoped
from lifebox_grpc.services.files.access import require_file
from lifebox_grpc.services.files.base import FileRpcs
from lifebox_grpc.services.files.mapping import file_pb


class DownloadRpcs(FileRpcs):
    """DownloadFile."""

    async def DownloadFile(
        self, request: files_pb2.DownloadFileRequest, context: Any
    ) -> AsyncIterator[files_pb2.DownloadFileResponse]:
        principal = require_principal()
        errors = ErrorCollector()
        file_id = parse_uuid(errors, "id", request.id)
        if request.offset < 0:
            errors.add("offset", "must not be negative")
        if request.length < 0:
            errors.add("length", "must not be negative")
        errors.raise_if_any()
        async with scoped(self.pool, principal) as conn:
            f = await require_file(conn, principal, file_id)
        if request.offset > f.size_bytes:
            errors.add("offset", f"is past the end of the file ({f.size_bytes} bytes)")
            errors.raise_if_any()
        left = f.size_bytes - request.offset
        length = min(request.length, left) if request.length else left
        meta = file_pb(f)
        position = request.offset
        if length == 0:
            yield files_pb2.DownloadFileResponse(file=meta, offset=position)
            return
        pieces = self.store_of(f.store).read(
            lambda: scoped(self.pool, principal), f.storage_key, position, length
        )
        async for piece in pieces:
            yield files_pb2.DownloadFileResponse(
                file=meta if position == request.offset else None, offset=position, data=piece
            )
            position += len(piece)
