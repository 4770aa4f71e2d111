"""FileService: files as protobuf, and access levels both ways."""

from __future__ import annotations

from lifebox.v1 import files_pb2
from lifebox_grpc.services.common import timestamp
from lifebox_grpc.store.files import File

# API level -> files.access_level ('shared': attached to a page, whose shares apply).
LEVEL_COLUMN = {
    files_pb2.FILE_ACCESS_LEVEL_UNSPECIFIED: "private",
    files_pb2.FILE_ACCESS_LEVEL_PRIVATE: "private",
    files_pb2.FILE_ACCESS_LEVEL_TENANT: "client",
    files_pb2.FILE_ACCESS_LEVEL_PAGE: "shared",
}
_LEVEL_PB = {
    "private": files_pb2.FILE_ACCESS_LEVEL_PRIVATE,
    "client": files_pb2.FILE_ACCESS_LEVEL_TENANT,
    "shared": files_pb2.FILE_ACCESS_LEVEL_PAGE,
}


def file_pb(f: File) -> files_pb2.File:
    return files_pb2.File(
        id=str(f.id),
        client_id=str(f.client_id),
        owner_id=str(f.owner_id) if f.owner_id else "",
        device_id=str(f.device_id) if f.device_id else "",
        page_id=str(f.page_id) if f.page_id else "",
        name=f.name,
        content_type=f.content_type,
        size_bytes=f.size_bytes,
        sha256=f.sha256.hex(),
        access_level=_LEVEL_PB[f.access_level],
        create_time=timestamp(f.created_at),
    )
