"""CommandService: what every resource module of the service holds."""

from __future__ import annotations

import asyncpg

from lifebox.v1 import commands_pb2_grpc
from lifebox_grpc.config import Settings
from lifebox_grpc.services.commands.fanout import CommandFanout


class CommandRpcs(commands_pb2_grpc.CommandServiceServicer):
    """The pool, settings and live-update hub the RPCs of every resource module use."""

    def __init__(self, pool: asyncpg.Pool, settings: Settings, fanout: CommandFanout) -> None:
        self.pool = pool
        self.settings = settings
        self.fanout = fanout
