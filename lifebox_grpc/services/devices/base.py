"""DeviceService: what every resource module of the service holds."""

from __future__ import annotations

import asyncpg

from lifebox.v1 import devices_pb2_grpc
from lifebox_grpc.config import Settings


class DeviceRpcs(devices_pb2_grpc.DeviceServiceServicer):
    """The pool and settings the RPCs of every resource module use."""

    def __init__(self, pool: asyncpg.Pool, settings: Settings) -> None:
        self.pool = pool
        self.settings = settings
