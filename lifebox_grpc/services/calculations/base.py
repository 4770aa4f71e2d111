"""CalculationService: what every module of the service holds, and the formula lookup."""

from __future__ import annotations

import uuid

import asyncpg

from lifebox.v1 import calculations_pb2_grpc
from lifebox_grpc.auth.principal import Principal
from lifebox_grpc.config import Settings
from lifebox_grpc.errors import NotFound
from lifebox_grpc.store import calculation_formulas as store


class CalculationRpcs(calculations_pb2_grpc.CalculationServiceServicer):
    """The pool and settings the RPCs of every module use."""

    def __init__(self, pool: asyncpg.Pool, settings: Settings) -> None:
        self.pool = pool
        self.settings = settings


def tenant_of(principal: Principal) -> uuid.UUID | None:
    """The client a principal's formulas are scoped to (None: staff, every one)."""
    return None if principal.is_staff else principal.client_id


async def require_formula(
    conn: asyncpg.Connection, principal: Principal, formula_id: uuid.UUID, lock: bool = False
) -> store.Formula:
    """The formula in the caller's scope, else NOT_FOUND."""
    formula = await store.get_formula(conn, tenant_of(principal), formula_id, lock=lock)
    if formula is None:
        raise NotFound("formula not found")
    return formula
