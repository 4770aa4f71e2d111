"""FileService: what every module of the service holds."""

from __future__ import annotations

from pathlib import Path

import asyncpg

from lifebox.v1 import files_pb2_grpc
from lifebox_grpc.config import Settings
from lifebox_grpc.files.storage import FileStorage, store_named


def files_dir(settings: Settings) -> Path:
    return settings.files_dir or settings.home / "files"


class FileRpcs(files_pb2_grpc.FileServiceServicer):
    """The pool, settings and the file store new uploads go to."""

    def __init__(self, pool: asyncpg.Pool, settings: Settings) -> None:
        self.pool = pool
        self.settings = settings
        self.storage = store_named(settings.files_store, files_dir(settings))

    def store_of(self, name: str) -> FileStorage:
        """The store that holds a file (files.store): the configured one, or the one a
        file written before a change of LIFEBOX_FILES_STORE went to."""
        if name == self.storage.name:
            return self.storage
        return store_named(name, files_dir(self.settings))

    def quota_of(self, quota_bytes: int | None) -> int:
        return self.settings.files_quota_bytes if quota_bytes is None else quota_bytes
