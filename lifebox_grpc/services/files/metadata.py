"""FileService: a file's metadata, the files one may see, deleting, and the quota."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from lifebox.v1 import files_pb2
from lifebox_grpc.auth.principal import require_principal
from lifebox_grpc.errors import ErrorCollector
from lifebox_grpc.services.common import (
    decode_page_token,
    encode_page_token,
    page_size,
    parse_uuid,
    require_uuid,
    scoped,
)
from lifebox_grpc.services.files.access import (
    administers,
    device_scope,
    requested_tenant,
    require_file,
    tenant_of,
)
from lifebox_grpc.services.files.base import FileRpcs
from lifebox_grpc.services.files.mapping import file_pb
from lifebox_grpc.store import files as file_store


class MetadataRpcs(FileRpcs):
    """GetFile, ListFiles, DeleteFile, GetFileQuota."""

    async def GetFile(
        self, request: files_pb2.GetFileRequest, context: Any
    ) -> files_pb2.GetFileResponse:
        principal = require_principal()
        file_id = require_uuid("id", request.id)
        async with scoped(self.pool, principal) as conn:
            f = await require_file(conn, principal, file_id)
        return files_pb2.GetFileResponse(file=file_pb(f))

    async def ListFiles(
        self, request: files_pb2.ListFilesRequest, context: Any
    ) -> files_pb2.ListFilesResponse:
        principal = require_principal()
        errors = ErrorCollector()
        size = page_size(errors, request.page_size)
        where = file_store.FileFilter(
            device_id=parse_uuid(errors, "device_id", request.device_id, required=False),
            page_id=parse_uuid(errors, "page_id", request.page_id, required=False),
            owner_id=parse_uuid(errors, "owner_id", request.owner_id, required=False),
            content_type=request.content_type or None,
        )
        client_id = tenant_of(principal)
        if request.client_id:
            client_id = requested_tenant(principal, errors, "client_id", request.client_id)
        key = decode_page_token(errors, request.page_token, 2)
        after = None
        if key:
            try:
                after = (datetime.fromisoformat(key[0]), uuid.UUID(key[1]))
            except ValueError:
                errors.add("page_token", "is not a token this API returned")
        errors.raise_if_any()
        viewer = None if administers(principal) else principal.user_id
        async with scoped(self.pool, principal) as conn:
            rows = await file_store.list_files(
                conn,
                client_id,
                viewer,
                where,
                devices=device_scope(principal),
                after=after,
                limit=size + 1,
            )
        page = rows[:size]
        token = ""
        if len(rows) > size:
            token = encode_page_token([page[-1].created_at.isoformat(), str(page[-1].id)])
        return files_pb2.ListFilesResponse(files=[file_pb(f) for f in page], next_page_token=token)

    async def DeleteFile(
        self, request: files_pb2.DeleteFileRequest, context: Any
    ) -> files_pb2.DeleteFileResponse:
        principal = require_principal()
        file_id = require_uuid("id", request.id)
        async with scoped(self.pool, principal) as conn:
            f = await require_file(conn, principal, file_id, delete=True)
            await file_store.delete_file(conn, f.id)
        # After the row's deletion is committed: bytes without a row are garbage at worst.
        async with scoped(self.pool, principal) as conn:
            await self.store_of(f.store).delete(conn, f.storage_key)
        return files_pb2.DeleteFileResponse()

    async def GetFileQuota(
        self, request: files_pb2.GetFileQuotaRequest, context: Any
    ) -> files_pb2.GetFileQuotaResponse:
        principal = require_principal()
        errors = ErrorCollector()
        client_id = requested_tenant(principal, errors, "client_id", request.client_id)
        errors.raise_if_any()
        assert client_id is not None
        async with scoped(self.pool, principal) as conn:
            usage = await file_store.usage(conn, client_id)
        return files_pb2.GetFileQuotaResponse(
            used_bytes=usage.used_bytes,
            limit_bytes=self.quota_of(usage.quota_bytes),
            max_file_bytes=self.settings.files_max_bytes,
        )
