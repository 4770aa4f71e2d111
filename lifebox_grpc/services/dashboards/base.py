"""DashboardService: what every resource module holds, and which devices a caller sees."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import asyncpg

from lifebox.v1 import dashboards_pb2_grpc
from lifebox_grpc.auth.principal import Principal
from lifebox_grpc.config import Settings
from lifebox_grpc.services.device_access import ASSIGNED_ONLY_ROLES


class DashboardRpcs(dashboards_pb2_grpc.DashboardServiceServicer):
    """The pool and settings the RPCs of every resource module use."""

    def __init__(self, pool: asyncpg.Pool, settings: Settings) -> None:
        self.pool = pool
        self.settings = settings


def sees_device(principal: Principal) -> Callable[[uuid.UUID], bool]:
    """Whether ``principal`` may see a device of a page of its tenant (every device of a
    page is of the page's tenant): administrators and staff all, operators and viewers
    their assigned ones, which come with the principal (no database read)."""
    if principal.role not in ASSIGNED_ONLY_ROLES:
        return lambda _device: True
    assigned = frozenset(principal.assigned_device_ids)
    return assigned.__contains__
