"""Connection pools and the tenant-scoped transaction every store call runs in."""

from __future__ import annotations

import contextlib
import functools
import itertools
import uuid
from collections.abc import AsyncIterator, Generator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import TracebackType
from typing import Any

import asyncpg

from lifebox_grpc.config import Settings
from lifebox_grpc.errors import ResourceExhausted

# What a caller that found no free connection is told to wait before retrying.
POOL_RETRY_AFTER_SECONDS = 1.0


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Release without asyncpg's reset query (an open transaction is still rolled back)."""


def _exhausted(timeout: float | None) -> ResourceExhausted:
    return ResourceExhausted(
        f"no database connection came free within {timeout:g}s: the server is busy, retry shortly",
        retry_after=POOL_RETRY_AFTER_SECONDS,
        subject="server:database_connections",
    )


class _Acquire:
    """:meth:`asyncpg.Pool.acquire`'s context (``async with`` or ``await``), with its
    timeout reported as ResourceExhausted."""

    __slots__ = ("_inner", "_timeout")

    def __init__(self, inner: Any, timeout: float | None) -> None:
        self._inner = inner
        self._timeout = timeout

    async def __aenter__(self) -> asyncpg.Connection:
        try:
            return await self._inner.__aenter__()
        except TimeoutError as exc:
            raise _exhausted(self._timeout) from exc

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._inner.__aexit__(exc_type, exc, tb)

    def __await__(self) -> Generator[Any, None, asyncpg.Connection]:
        return self._acquired().__await__()

    async def _acquired(self) -> asyncpg.Connection:
        try:
            return await self._inner
        except TimeoutError as exc:
            raise _exhausted(self._timeout) from exc


class BoundedPool(asyncpg.Pool):  # type: ignore[misc]
    """A pool whose :meth:`acquire` waits at most ``acquire_timeout`` seconds by default
    (None: as long as it takes), and reports a wait that ran out as ResourceExhausted
    (RESOURCE_EXHAUSTED with RetryInfo to a gRPC caller), not as a bare TimeoutError."""

    def __init__(self, dsn: str, *, acquire_timeout: float | None, **kwargs: Any) -> None:
        super().__init__(dsn, **kwargs)
        self.acquire_timeout = acquire_timeout

    def acquire(self, *, timeout: float | None = None) -> _Acquire:
        timeout = self.acquire_timeout if timeout is None else timeout
        return _Acquire(super().acquire(timeout=timeout), timeout)


async def create_pool(
    dsn: str,
    settings: Settings,
    application_name: str,
    *,
    session_state: bool = True,
    acquire_timeout: float | None = None,
) -> asyncpg.Pool:
    """A pool whose connections carry our statement timeout and name.

    ``session_state=False`` promises that users of the pool never leave session state behind
    (session-level settings, LISTEN, cursors WITH HOLD, session advisory locks): every setting
    is transaction-local (:func:`tenant_transaction`). The pool then skips asyncpg's reset
    query on release (``RESET ALL; UNLISTEN *; CLOSE ALL; pg_advisory_unlock_all()``), a
    round trip per acquire; an open transaction is still rolled back.

    ``acquire_timeout``: how long :meth:`BoundedPool.acquire` waits for a free connection
    unless told otherwise (None: without limit); a wait that runs out raises
    ResourceExhausted.
    """
    pool = BoundedPool(
        dsn,
        acquire_timeout=acquire_timeout,
        min_size=settings.db_pool_min,
        max_size=settings.db_pool_max,
        # asyncpg.create_pool's own defaults for the rest.
        max_queries=50_000,
        max_inactive_connection_lifetime=300.0,
        loop=None,
        connection_class=asyncpg.Connection,
        record_class=asyncpg.Record,
        server_settings={
            "application_name": application_name,
            "statement_timeout": str(settings.db_statement_timeout_ms),
            "timezone": "UTC",
        },
        reset=None if session_state else _keep_session,
    )
    await pool
    return pool


def _client_text(client_id: uuid.UUID | None) -> str:
    if client_id is not None and not isinstance(client_id, uuid.UUID):
        raise TypeError("client_id must be a UUID")
    return str(client_id) if client_id else ""


def _set_scope(client: str, staff: str) -> str:
    """The select list that sets both tenant settings, transaction-local, to two SQL values;
    the client's column is named ``entered``."""
    return (
        f"set_config('lifebox.client_id', {client}, true) AS entered, "
        f"set_config('lifebox.staff', {staff}, true)"
    )


def _begin_sql(client_id: uuid.UUID | None, staff: bool) -> str:
    """BEGIN and both tenant settings as one simple-query string (one round trip).

    Literals, not parameters, because a simple query takes none: the values are a UUID's
    canonical text (hex and dashes) and a fixed word, so nothing a caller sends is quoted in.
    """
    client = _client_text(client_id)
    settings = _set_scope(f"'{client}'", "'on'" if staff else "'off'")
    return f"BEGIN; SELECT {settings}"


@functools.lru_cache(maxsize=256)
def _self_scoped_sql(sql: str, nargs: int) -> str:
    """``sql`` as one statement that first sets both tenant settings (the two parameters
    after its own ``nargs``), then runs ``sql`` under them.

    Order is the point: the settings are made in a FROM item that ``sql`` reads laterally
    (``scope.entered``), so ``sql`` runs once per row of it, after it, by the meaning of
    LATERAL; OFFSET 0 keeps both subqueries from being merged away. Should a plan ever
    evaluate a policy before the settings, it sees no tenant (nothing here is ever set for
    the session) and returns no rows: it fails closed, never open. One part of a plan is
    evaluated at executor startup, before any row: partition pruning. A read that prunes on
    the settings themselves would find nothing, so such reads belong in a transaction.
    """
    client, staff = nargs + 1, nargs + 2
    return (
        f"SELECT q.* FROM (SELECT {_set_scope(f'${client}::text', f'${staff}::text')} "
        "OFFSET 0) AS scope "
        f"CROSS JOIN LATERAL (SELECT * FROM ({sql}\n) AS q "
        "WHERE scope.entered IS NOT NULL OFFSET 0) AS q"
    )


async def fetchrow_in_tenant(
    conn: asyncpg.Connection,
    client_id: uuid.UUID | None,
    staff: bool,
    sql: str,
    *args: object,
) -> asyncpg.Record | None:
    """The first row of a read, in one round trip, as :func:`tenant_transaction` would scope it.

    Outside a transaction, the statement sets the tenant settings itself (transaction-local
    to its own implicit transaction, so gone when it ends): one round trip instead of the
    three of BEGIN + settings, the read and COMMIT. As there, ``staff`` is said explicitly:
    no client id without it is no tenant at all, and sees nothing. Inside a transaction the
    read runs as is, under the settings the transaction already has.
    """
    client = _client_text(client_id)
    if conn.is_in_transaction():
        return await conn.fetchrow(sql, *args)
    return await conn.fetchrow(
        _self_scoped_sql(sql, len(args)), *args, client, "on" if staff else "off"
    )


_ENDED = (asyncpg.InterfaceError, asyncpg.PostgresError, OSError)


@asynccontextmanager
async def _block(
    conn: asyncpg.Connection, begin: str, end: str, undo: str
) -> AsyncIterator[asyncpg.Connection]:
    """Run ``begin``, the block, then ``end``; ``undo`` instead if the block raises (and if
    even that fails, the pool's release rolls back or drops the connection)."""
    await conn.execute(begin)
    try:
        yield conn
    except BaseException:
        if not conn.is_closed() and conn.is_in_transaction():
            with contextlib.suppress(*_ENDED):
                await conn.execute(undo)
        raise
    await conn.execute(end)


def tenant_transaction(
    conn: asyncpg.Connection, client_id: uuid.UUID | None, *, staff: bool = False
) -> AbstractAsyncContextManager[asyncpg.Connection]:
    """A transaction in which row-level security sees one tenant (or, for staff, all).

    Both settings are transaction-local (``set_config(..., true)``), so nothing leaks to the
    next user of a pooled connection. ``lifebox.staff`` is the one, separately named path
    across tenants; only platform staff principals get it.

    BEGIN and the settings travel in one round trip, so a one-statement read costs three
    (BEGIN + settings, the read, COMMIT) instead of four; :func:`fetchrow_in_tenant` makes
    a lone read one. The transaction is started by hand, so asyncpg's
    ``conn.transaction()`` refuses to nest inside it: use :func:`savepoint`.
    """
    return _block(conn, _begin_sql(client_id, staff), "COMMIT", "ROLLBACK")


def savepoint(conn: asyncpg.Connection) -> AbstractAsyncContextManager[asyncpg.Connection]:
    """A nested block of a :func:`tenant_transaction`: undone alone if it raises."""
    name = f"lifebox_sp_{next(_SAVEPOINTS)}"
    return _block(
        conn,
        f"SAVEPOINT {name}",
        f"RELEASE SAVEPOINT {name}",
        f"ROLLBACK TO SAVEPOINT {name}; RELEASE SAVEPOINT {name}",
    )


_SAVEPOINTS = itertools.count(1)
