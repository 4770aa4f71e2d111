"""AlarmService: what every resource module of the service holds, and the scope helpers."""

from __future__ import annotations

import uuid

import asyncpg

from lifebox.v1 import alarms_pb2_grpc
from lifebox_grpc.auth.principal import Principal
from lifebox_grpc.config import Settings
from lifebox_grpc.services.alarms.fanout import AlarmFanout


class AlarmRpcs(alarms_pb2_grpc.AlarmServiceServicer):
    """The pool, settings and live-change hub the RPCs of every resource module use."""

    def __init__(self, pool: asyncpg.Pool, settings: Settings, fanout: AlarmFanout) -> None:
        self.pool = pool
        self.settings = settings
        self.fanout = fanout


def tenant_of(principal: Principal) -> uuid.UUID | None:
    """The client a principal's rules and events are scoped to (None: staff, every one)."""
    return None if principal.is_staff else principal.client_id
