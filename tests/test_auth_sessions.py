"""An access token lives and dies with its session family: logout, refresh-token reuse and
logout of every session make it UNAUTHENTICATED on the next call (at once on the process
that did it, by NOTIFY on the others), while the user's other sessions and a brand-new
sign-in keep working with the principal cache warm."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import grpc
import pytest

from lifebox.v1 import auth_pb2
from lifebox_grpc.auth.principal_cache import PrincipalCache
from lifebox_grpc.runtime.mosquitto import EmbeddedMosquitto
from tests.helpers import factories
from tests.helpers.grpc import (
    Account,
    Server,
    bearer,
    close_server,
    make_account,
    open_server,
    server_settings,
    sign_in,
)
from tests.helpers.services import Database
from tests.helpers.wait import async_wait_until


def _cache(server: Server) -> PrincipalCache:
    assert server.running.auth is not None
    return server.running.auth.principals


async def _code(server: Server, token: str) -> grpc.StatusCode:
    try:
        await server.auth.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(token), timeout=10)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def _warm(server: Server, account: Account) -> None:
    """Call until the caller's principal, with this session live, is held by the cache."""
    cache = _cache(server)

    async def cached() -> bool:
        assert await _code(server, account.access_token) == grpc.StatusCode.OK
        return cache.listening and cache.get(account.user_id) is not None

    await async_wait_until(cached, timeout=30, what="a warm principal cache")


async def _account(server: Server, conn: asyncpg.Connection) -> Account:
    client_id = await factories.make_client(conn)
    return await sign_in(server, await make_account(conn, "client", client_id))


async def test_logout_stops_the_sessions_access_token_at_once_and_no_other(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    account = await _account(grpc_server, owner_conn)
    other = await sign_in(grpc_server, Account(account.user_id, account.email, "client", None))
    await _warm(grpc_server, account)
    await grpc_server.auth.Logout(auth_pb2.LogoutRequest(refresh_token=account.refresh_token))
    assert await _code(grpc_server, account.access_token) == grpc.StatusCode.UNAUTHENTICATED
    assert await _code(grpc_server, other.access_token) == grpc.StatusCode.OK


async def test_refresh_token_reuse_stops_every_access_token_of_the_family(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    account = await _account(grpc_server, owner_conn)
    rotated = await grpc_server.auth.RefreshToken(
        auth_pb2.RefreshTokenRequest(refresh_token=account.refresh_token)
    )
    await _warm(grpc_server, account)
    assert await _code(grpc_server, rotated.tokens.access_token) == grpc.StatusCode.OK
    with pytest.raises(grpc.aio.AioRpcError):
        await grpc_server.auth.RefreshToken(
            auth_pb2.RefreshTokenRequest(refresh_token=account.refresh_token)
        )
    for token in (account.access_token, rotated.tokens.access_token):
        assert await _code(grpc_server, token) == grpc.StatusCode.UNAUTHENTICATED


async def test_logout_of_every_session_stops_every_access_token(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    account = await _account(grpc_server, owner_conn)
    other = await sign_in(grpc_server, Account(account.user_id, account.email, "client", None))
    await _warm(grpc_server, account)
    await grpc_server.auth.Logout(auth_pb2.LogoutRequest(all_sessions=True), metadata=other.md)
    for token in (account.access_token, other.access_token):
        assert await _code(grpc_server, token) == grpc.StatusCode.UNAUTHENTICATED


async def test_a_new_sign_in_works_at_once_while_an_older_principal_is_cached(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    account = await _account(grpc_server, owner_conn)
    await _warm(grpc_server, account)
    fresh = await sign_in(grpc_server, Account(account.user_id, account.email, "client", None))
    assert await _code(grpc_server, fresh.access_token) == grpc.StatusCode.OK
    assert await _code(grpc_server, account.access_token) == grpc.StatusCode.OK


@pytest.fixture(scope="module")
async def replica(database: Database, broker: EmbeddedMosquitto) -> AsyncIterator[Server]:
    """A second `serve` on the same database: another replica, with its own cache, which
    keeps entries long enough that only a notification can empty it within a test."""
    server = await open_server(server_settings(database, broker, principal_cache_seconds=60))
    yield server
    await close_server(server)


async def test_a_logout_on_one_replica_reaches_another_replicas_warm_cache(
    grpc_server: Server, replica: Server, owner_conn: asyncpg.Connection
) -> None:
    account = await _account(grpc_server, owner_conn)
    await _warm(replica, account)
    cache = _cache(replica)
    await grpc_server.auth.Logout(auth_pb2.LogoutRequest(refresh_token=account.refresh_token))

    async def dropped() -> bool:
        return cache.get(account.user_id) is None

    await async_wait_until(dropped, timeout=30, what="the session's notification on the replica")
    assert await _code(replica, account.access_token) == grpc.StatusCode.UNAUTHENTICATED
