"""FileService: UploadFile, a client stream of metadata then chunks.

Everything an upload leaves happens in one tenant transaction: the page and device checks,
the bytes (a database store's chunk rows; a directory store's file, renamed into place just
before COMMIT), the quota check under the tenant's locked usage row, and the files row. A
stream that ends early, is cancelled, runs past the size cap or the quota, or whose bytes
are not its content type rolls all of it back and aborts the store's writer: no row, no
bytes.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from lifebox.v1 import files_pb2
from lifebox_grpc.auth.principal import Principal, require_principal
from lifebox_grpc.errors import ErrorCollector, InvalidArgument, ResourceExhausted
from lifebox_grpc.files.content import ContentCheck, ContentMismatch
from lifebox_grpc.files.storage import BlobWriter, new_storage_key
from lifebox_grpc.services.common import check_text, parse_uuid, scoped
from lifebox_grpc.services.dashboards.access import require_page
from lifebox_grpc.services.device_access import require_device
from lifebox_grpc.services.files.access import requested_tenant
from lifebox_grpc.services.files.base import FileRpcs
from lifebox_grpc.services.files.mapping import LEVEL_COLUMN, file_pb
from lifebox_grpc.store import files as file_store

MAX_NAME = 255
# A refused upload would be refused again: a client told to retry waits, but not for long.
QUOTA_RETRY_AFTER = 60.0


@dataclass(frozen=True)
class _Upload:
    client_id: uuid.UUID
    name: str
    content_type: str
    access_level: str
    page_id: uuid.UUID | None
    device_id: uuid.UUID | None
    expected: int


def _check_metadata(
    principal: Principal, meta: files_pb2.FileMetadata, allowed: list[str]
) -> _Upload:
    errors = ErrorCollector()
    check_text(errors, "metadata.name", meta.name, max_length=MAX_NAME)
    if "/" in meta.name or "\\" in meta.name or "\x00" in meta.name:
        errors.add("metadata.name", "must not hold '/', '\\' or NUL")
    if meta.content_type not in allowed:
        errors.add("metadata.content_type", f"must be one of: {', '.join(allowed)}")
    level = LEVEL_COLUMN.get(meta.access_level)
    if level is None:
        errors.add("metadata.access_level", "is not a FileAccessLevel")
    page_id = parse_uuid(errors, "metadata.page_id", meta.page_id, required=level == "shared")
    if page_id is not None and level != "shared":
        errors.add("metadata.page_id", "only a FILE_ACCESS_LEVEL_PAGE file names a page")
    device_id = parse_uuid(errors, "metadata.device_id", meta.device_id, required=False)
    client_id = requested_tenant(principal, errors, "metadata.client_id", meta.client_id)
    if meta.expected_size_bytes < 0:
        errors.add("metadata.expected_size_bytes", "must not be negative")
    errors.raise_if_any()
    assert client_id is not None
    assert level is not None
    return _Upload(
        client_id, meta.name, meta.content_type, level, page_id, device_id,
        meta.expected_size_bytes,
    )  # fmt: skip


def _too_big(cap: int) -> InvalidArgument:
    return InvalidArgument.field("chunk", f"the file is larger than the {cap}-byte cap")


def _over_quota(limit: int) -> ResourceExhausted:
    return ResourceExhausted(
        f"this file would take the tenant's files past its quota of {limit} bytes: "
        "delete files or ask for a larger quota",
        retry_after=QUOTA_RETRY_AFTER,
        subject="files:tenant_bytes",
        reason="ERROR_REASON_QUOTA_EXCEEDED",
    )


class UploadRpcs(FileRpcs):
    """UploadFile."""

    async def UploadFile(
        self, request_iterator: AsyncIterator[files_pb2.UploadFileRequest], context: Any
    ) -> files_pb2.UploadFileResponse:
        principal = require_principal()
        messages = aiter(request_iterator)
        first = await anext(messages, None)
        if first is None or first.WhichOneof("part") != "metadata":
            raise InvalidArgument.field(
                "metadata", "the first message must carry the file's metadata"
            )
        upload = _check_metadata(principal, first.metadata, self.settings.files_allowed_types)
        cap = self.settings.files_max_bytes
        if upload.expected > cap:
            raise _too_big(cap)
        writer: BlobWriter | None = None
        try:
            async with scoped(self.pool, principal) as conn:
                if upload.page_id is not None:
                    page = await require_page(conn, principal, upload.page_id, edit=True)
                    if page.client_id != upload.client_id:
                        raise InvalidArgument.field(
                            "metadata.page_id", "is a page of another client"
                        )
                if upload.device_id is not None:
                    device = await require_device(conn, principal, upload.device_id)
                    if device.client_id != upload.client_id:
                        raise InvalidArgument.field(
                            "metadata.device_id", "is a device of another client"
                        )
                usage = await file_store.usage(conn, upload.client_id)
                limit = self.quota_of(usage.quota_bytes)
                if usage.used_bytes + upload.expected > limit:
                    raise _over_quota(limit)
                key = new_storage_key(upload.client_id)
                writer = self.storage.writer(conn, upload.client_id, key)
                check = ContentCheck(upload.content_type)
                digest = hashlib.sha256()
                size = 0
                async for message in messages:
                    if message.WhichOneof("part") != "chunk":
                        raise InvalidArgument.field(
                            "metadata", "only the first message carries metadata"
                        )
                    data = message.chunk
                    size += len(data)
                    if size > cap:
                        raise _too_big(cap)
                    if usage.used_bytes + size > limit:  # early; the binding check is below
                        raise _over_quota(limit)
                    check.feed(data)
                    digest.update(data)
                    await writer.append(data)
                check.close()
                if upload.expected and size != upload.expected:
                    raise InvalidArgument.field(
                        "metadata.expected_size_bytes",
                        f"the upload sent {size} bytes, not the {upload.expected} announced",
                    )
                # Uploads of one tenant serialise here until each commits or rolls back.
                locked = await file_store.lock_usage(conn, upload.client_id)
                limit = self.quota_of(locked.quota_bytes)
                if locked.used_bytes + size > limit:
                    raise _over_quota(limit)
                await writer.finish()
                stored = await file_store.insert_file(
                    conn,
                    file_store.NewFile(
                        client_id=upload.client_id,
                        owner_id=principal.user_id,
                        device_id=upload.device_id,
                        page_id=upload.page_id,
                        name=upload.name,
                        content_type=upload.content_type,
                        size_bytes=size,
                        sha256=digest.digest(),
                        storage_key=key,
                        store=self.storage.name,
                        access_level=upload.access_level,
                    ),
                )
        except ContentMismatch as exc:
            if writer is not None:
                await writer.abort()
            raise InvalidArgument.field("metadata.content_type", str(exc)) from exc
        except BaseException:
            if writer is not None:
                await writer.abort()
            raise
        return files_pb2.UploadFileResponse(file=file_pb(stored))
