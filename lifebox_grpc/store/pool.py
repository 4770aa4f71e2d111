"""Connection pools and the tenant-scoped transaction every store call runs in."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from lifebox_grpc.config import Settings


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Release without asyncpg's reset query (an open transaction is still rolled back)."""


async def create_pool(
    dsn: str, settings: Settings, application_name: str, *, session_state: bool = True
) -> asyncpg.Pool:
    """A pool whose connections carry our statement timeout and name.

    ``session_state=False`` promises that users of the pool never leave session state behind
    (session-level settings, LISTEN, cursors WITH HOLD, session advisory locks): every setting
    is transaction-local (:func:`tenant_transaction`). The pool then skips asyncpg's reset
    query on release (``RESET ALL; UNLISTEN *; CLOSE ALL; pg_advisory_unlock_all()``), a
    round trip per acquire; an open transaction is still rolled back.
    """
    pool = await asyncpg.create_pool(
        dsn,
        min_size=settings.db_pool_min,
        max_size=settings.db_pool_max,
        server_settings={
            "application_name": application_name,
            "statement_timeout": str(settings.db_statement_timeout_ms),
            "timezone": "UTC",
        },
        reset=None if session_state else _keep_session,
    )
    assert pool is not None
    return pool


@asynccontextmanager
async def tenant_transaction(
    conn: asyncpg.Connection, client_id: uuid.UUID | None, *, staff: bool = False
) -> AsyncIterator[asyncpg.Connection]:
    """A transaction in which row-level security sees one tenant (or, for staff, all).

    Both settings are transaction-local (``set_config(..., true)``), so nothing leaks to the
    next user of a pooled connection. ``lifebox.staff`` is the one, separately named path
    across tenants; only platform staff principals get it.
    """
    async with conn.transaction():
        await conn.execute(
            "SELECT set_config('lifebox.client_id', $1, true), "
            "set_config('lifebox.staff', $2, true)",
            str(client_id) if client_id else "",
            "on" if staff else "off",
        )
        yield conn
