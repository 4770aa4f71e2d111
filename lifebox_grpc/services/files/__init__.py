"""FileService: uploads, metadata, downloads and the tenant's quota, one module per concern.
Validation, access and mapping here; the SQL in store/files.py; the bytes in a file store
(lifebox_grpc/files)."""

from __future__ import annotations

from lifebox_grpc.services.files.download import DownloadRpcs
from lifebox_grpc.services.files.metadata import MetadataRpcs
from lifebox_grpc.services.files.upload import UploadRpcs

__all__ = ["FileServicer"]


class FileServicer(UploadRpcs, DownloadRpcs, MetadataRpcs):
    """The FileService handlers."""
