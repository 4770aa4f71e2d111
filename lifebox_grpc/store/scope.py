"""Whose rows a store call may touch: one tenant, or (for platform staff) every tenant."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg

from lifebox_grpc.store.pool import tenant_transaction


@dataclass(frozen=True)
class Scope:
    """The tenant scope of a store call, passed explicitly (never a global).

    ``client_id`` None means the staff path: every tenant, and only for platform staff.
    Store queries filter on :attr:`client_filter` *and* row-level security enforces the same
    scope, so a query that forgets its filter still sees only its tenant.
    """

    client_id: uuid.UUID | None

    @classmethod
    def tenant(cls, client_id: uuid.UUID) -> Scope:
        return cls(client_id)

    @classmethod
    def staff(cls) -> Scope:
        return cls(None)

    @property
    def is_staff(self) -> bool:
        return self.client_id is None

    @property
    def client_filter(self) -> uuid.UUID | None:
        """The client id a query must match, or None when every tenant is in scope."""
        return self.client_id


@asynccontextmanager
async def scoped_transaction(
    conn: asyncpg.Connection, scope: Scope
) -> AsyncIterator[asyncpg.Connection]:
    """A transaction whose row-level security context is ``scope``."""
    async with tenant_transaction(conn, scope.client_id, staff=scope.is_staff) as tx:
        yield tx
