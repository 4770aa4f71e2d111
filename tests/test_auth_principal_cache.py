"""The principal cache of `serve` never outlives a change: with the cache warm, a disabled or
deleted user, a changed password or role, a suspended client, a changed role permission or
assignment takes effect on the very next call once the NOTIFY has arrived; while the
listener is down nothing is served from the cache; a lost notification is bounded by the TTL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import grpc
import pytest

from lifebox.v1 import auth_pb2, common_pb2
from lifebox_grpc.auth.principal_cache import PrincipalCache
from lifebox_grpc.runtime.mosquitto import EmbeddedMosquitto
from lifebox_grpc.store.pool import tenant_transaction
from tests.helpers import factories
from tests.helpers.grpc import (
    Account,
    Server,
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


async def _warm(server: Server, account: Account) -> auth_pb2.GetMeResponse:
    """Call GetMe until the caller's principal is held by the cache (listener up)."""
    cache = _cache(server)
    replies: list[auth_pb2.GetMeResponse] = []

    async def cached() -> bool:
        replies.append(await server.auth.GetMe(auth_pb2.GetMeRequest(), metadata=account.md))
        return cache.listening and cache.get(account.user_id) is not None

    await async_wait_until(cached, timeout=30, what="a warm principal cache")
    return replies[-1]


async def _notified(server: Server, account: Account) -> None:
    """Wait until the cache no longer holds the account (its NOTIFY, or a wider one, came)."""
    cache = _cache(server)

    async def dropped() -> bool:
        return cache.get(account.user_id) is None

    await async_wait_until(dropped, timeout=30, what="the principal notification")


async def _staff(conn: asyncpg.Connection, sql: str, *args: object) -> None:
    async with tenant_transaction(conn, None, staff=True):
        await conn.execute(sql, *args)


async def _disable_silently(database: Database, user_id: uuid.UUID) -> None:
    """Disable a user without the notification (replica mode fires no ordinary triggers)."""
    admin = await asyncpg.connect(database.superuser_lifebox_dsn)
    try:
        async with admin.transaction():
            await admin.execute("SET LOCAL session_replication_role = replica")
            await admin.execute("UPDATE users SET status = 'disabled' WHERE id = $1", user_id)
    finally:
        await admin.close()


async def _get_me_code(server: Server, account: Account) -> grpc.StatusCode:
    try:
        await server.auth.GetMe(auth_pb2.GetMeRequest(), metadata=account.md)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


# change -> (SQL on $1, what $1 is, the status code of the next call)
REVOCATIONS = {
    "disabled": ("UPDATE users SET status = 'disabled' WHERE id = $1", "user", "UNAUTHENTICATED"),
    "deleted": ("DELETE FROM users WHERE id = $1", "user", "UNAUTHENTICATED"),
    "password-changed": (
        "UPDATE users SET password_changed_at = now() + interval '1 minute' WHERE id = $1",
        "user",
        "UNAUTHENTICATED",
    ),
    "client-suspended": (
        "UPDATE clients SET status = 'suspended' WHERE id = $1",
        "client",
        "FAILED_PRECONDITION",
    ),
}


@pytest.mark.parametrize("change", sorted(REVOCATIONS))
async def test_revocation_reaches_a_warm_cache_on_the_next_call(
    grpc_server: Server, owner_conn: asyncpg.Connection, change: str
) -> None:
    client_id = await factories.make_client(owner_conn)
    account = await sign_in(grpc_server, await make_account(owner_conn, "client", client_id))
    await _warm(grpc_server, account)
    sql, target, expected = REVOCATIONS[change]
    await _staff(owner_conn, sql, account.user_id if target == "user" else client_id)
    await _notified(grpc_server, account)
    assert await _get_me_code(grpc_server, account) == grpc.StatusCode[expected]


async def test_role_change_reaches_a_warm_cache_on_the_next_call(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    account = await sign_in(
        grpc_server,
        await make_account(owner_conn, "client", await factories.make_client(owner_conn)),
    )
    assert (await _warm(grpc_server, account)).user.role == common_pb2.ROLE_CLIENT
    await _staff(owner_conn, "UPDATE users SET role = 'viewer' WHERE id = $1", account.user_id)
    await _notified(grpc_server, account)
    me = await grpc_server.auth.GetMe(auth_pb2.GetMeRequest(), metadata=account.md)
    assert me.user.role == common_pb2.ROLE_VIEWER


async def test_assignment_changes_reach_a_warm_cache_on_the_next_call(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    client_id = await factories.make_client(owner_conn)
    account = await sign_in(grpc_server, await make_account(owner_conn, "operator", client_id))
    device_id, _ = await factories.make_device(owner_conn, client_id)
    assert list((await _warm(grpc_server, account)).assigned_device_ids) == []
    await _staff(
        owner_conn,
        "INSERT INTO user_device_assignments (client_id, user_id, device_id) VALUES ($1, $2, $3)",
        client_id,
        account.user_id,
        device_id,
    )
    await _notified(grpc_server, account)
    assert list((await _warm(grpc_server, account)).assigned_device_ids) == [str(device_id)]
    await _staff(
        owner_conn, "DELETE FROM user_device_assignments WHERE user_id = $1", account.user_id
    )
    await _notified(grpc_server, account)
    me = await grpc_server.auth.GetMe(auth_pb2.GetMeRequest(), metadata=account.md)
    assert list(me.assigned_device_ids) == []


async def test_role_permission_changes_drop_every_cached_principal(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    account = await sign_in(
        grpc_server,
        await make_account(owner_conn, "viewer", await factories.make_client(owner_conn)),
    )
    granted = set((await _warm(grpc_server, account)).permissions)
    permission = sorted(granted)[0]
    await _staff(
        owner_conn,
        "DELETE FROM role_permissions WHERE role = 'viewer' AND permission = $1",
        permission,
    )
    try:
        await _notified(grpc_server, account)
        me = await grpc_server.auth.GetMe(auth_pb2.GetMeRequest(), metadata=account.md)
        assert set(me.permissions) == granted - {permission}
    finally:
        await _staff(
            owner_conn,
            "INSERT INTO role_permissions (role, permission) VALUES ('viewer', $1)",
            permission,
        )


async def test_a_lost_listener_connection_drops_the_cache_and_it_comes_back(
    grpc_server: Server, owner_conn: asyncpg.Connection, database: Database
) -> None:
    account = await sign_in(
        grpc_server,
        await make_account(owner_conn, "client", await factories.make_client(owner_conn)),
    )
    await _warm(grpc_server, account)
    cache = _cache(grpc_server)
    before = cache.epoch
    admin = await asyncpg.connect(database.superuser_dsn)
    try:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'lifebox-serve-principals'"
        )
    finally:
        await admin.close()
    await _notified(grpc_server, account)
    assert cache.epoch > before
    await _warm(grpc_server, account)  # listening again, and caching again


@pytest.fixture
async def short_ttl_server(database: Database, broker: EmbeddedMosquitto) -> AsyncIterator[Server]:
    server = await open_server(server_settings(database, broker, principal_cache_seconds=1.0))
    yield server
    await close_server(server)


async def test_a_lost_notification_is_bounded_by_the_ttl(
    short_ttl_server: Server, owner_conn: asyncpg.Connection, database: Database
) -> None:
    server = short_ttl_server
    account = await sign_in(
        server, await make_account(owner_conn, "client", await factories.make_client(owner_conn))
    )
    await _warm(server, account)
    # A change whose notification never comes.
    await _disable_silently(database, account.user_id)

    async def refused() -> bool:
        return await _get_me_code(server, account) == grpc.StatusCode.UNAUTHENTICATED

    await async_wait_until(refused, timeout=10, what="the TTL to expire the stale principal")


async def test_nothing_is_served_from_the_cache_while_the_listener_is_down(
    short_ttl_server: Server, owner_conn: asyncpg.Connection, database: Database
) -> None:
    server = short_ttl_server
    account = await sign_in(
        server, await make_account(owner_conn, "client", await factories.make_client(owner_conn))
    )
    await _warm(server, account)
    cache = _cache(server)
    await cache.close()
    assert not cache.listening
    assert len(cache) == 0
    await _disable_silently(database, account.user_id)
    assert await _get_me_code(server, account) == grpc.StatusCode.UNAUTHENTICATED
    assert cache.get(account.user_id) is None
