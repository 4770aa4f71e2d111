"""Login over gRPC against a real server: success, failures that leak nothing, lockout,
disabled accounts, suspended clients, rehash on login and the per-address rate limit (the
lockout per e-mail and address: tests/test_auth_lockout.py)."""

from __future__ import annotations

import asyncpg
import grpc
import pytest
from argon2 import PasswordHasher

from lifebox.v1 import auth_pb2, common_pb2
from lifebox_grpc.auth.passwords import HASHER
from lifebox_grpc.runtime.mosquitto import EmbeddedMosquitto
from lifebox_grpc.store.pool import tenant_transaction
from tests.helpers import factories
from tests.helpers.grpc import (
    PASSWORD,
    Server,
    close_server,
    error_of,
    make_account,
    open_server,
    reason,
    server_settings,
    sign_in,
)
from tests.helpers.services import Database


async def _login(server: Server, email: str, password: str) -> auth_pb2.LoginResponse:
    return await server.auth.Login(
        auth_pb2.LoginRequest(email=email, password=password), timeout=10
    )


async def test_login_returns_tokens_and_the_user(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    client_id = await factories.make_client(owner_conn)
    account = await make_account(owner_conn, "operator", client_id)
    reply = await _login(grpc_server, account.email.upper(), PASSWORD)
    assert reply.tokens.access_token
    assert reply.tokens.refresh_token
    assert reply.tokens.token_type == "Bearer"
    assert reply.user.id == str(account.user_id)
    assert reply.user.role == common_pb2.ROLE_OPERATOR
    assert reply.user.client_id == str(client_id)
    assert reply.user.HasField("last_login_time")
    me = await grpc_server.auth.GetMe(
        auth_pb2.GetMeRequest(),
        metadata=(("authorization", f"Bearer {reply.tokens.access_token}"),),
    )
    assert me.user.email == account.email
    assert "devices.read" in me.permissions


async def test_wrong_password_and_unknown_email_read_the_same(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    account = await make_account(owner_conn, "client", await factories.make_client(owner_conn))
    with pytest.raises(grpc.aio.AioRpcError) as wrong:
        await _login(grpc_server, account.email, "not the password at all")
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await _login(grpc_server, f"{factories.unique('nobody')}@test.lifebox.local", PASSWORD)
    for exc in (wrong.value, unknown.value):
        assert exc.code() == grpc.StatusCode.UNAUTHENTICATED
        assert reason(exc) == "ERROR_REASON_INVALID_CREDENTIALS"
    assert wrong.value.details() == unknown.value.details()


async def test_repeated_failures_lock_the_account_even_for_the_right_password(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    account = await make_account(owner_conn, "viewer", await factories.make_client(owner_conn))
    for _ in range(grpc_server.settings.login_max_failures):
        with pytest.raises(grpc.aio.AioRpcError):
            await _login(grpc_server, account.email, "wrong password, again")
    with pytest.raises(grpc.aio.AioRpcError) as locked:
        await _login(grpc_server, account.email, PASSWORD)
    assert locked.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason(locked.value) == "ERROR_REASON_ACCOUNT_LOCKED"


async def test_unknown_email_locks_like_a_real_account(grpc_server: Server) -> None:
    email = f"{factories.unique('ghost')}@test.lifebox.local"
    for _ in range(grpc_server.settings.login_max_failures):
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await _login(grpc_server, email, "wrong password, again")
        assert failed.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as locked:
        await _login(grpc_server, email, PASSWORD)
    assert reason(locked.value) == "ERROR_REASON_ACCOUNT_LOCKED"


async def test_disabled_user_cannot_log_in(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    account = await make_account(owner_conn, "client", await factories.make_client(owner_conn))
    async with tenant_transaction(owner_conn, None, staff=True):
        await owner_conn.execute(
            "UPDATE users SET status = 'disabled' WHERE id = $1", account.user_id
        )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _login(grpc_server, account.email, PASSWORD)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason(refused.value) == "ERROR_REASON_ACCOUNT_DISABLED"


async def test_suspended_clients_users_cannot_log_in_and_their_tokens_stop(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    client_id = await factories.make_client(owner_conn)
    account = await sign_in(grpc_server, await make_account(owner_conn, "client", client_id))
    async with tenant_transaction(owner_conn, None, staff=True):
        await owner_conn.execute("UPDATE clients SET status = 'suspended' WHERE id = $1", client_id)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _login(grpc_server, account.email, PASSWORD)
    assert reason(refused.value) == "ERROR_REASON_CLIENT_SUSPENDED"
    with pytest.raises(grpc.aio.AioRpcError) as stale:
        await grpc_server.auth.GetMe(auth_pb2.GetMeRequest(), metadata=account.md)
    assert stale.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.aio.AioRpcError) as refresh:
        await grpc_server.auth.RefreshToken(
            auth_pb2.RefreshTokenRequest(refresh_token=account.refresh_token)
        )
    assert refresh.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_login_rehashes_a_password_stored_with_weaker_parameters(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    weak = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1).hash(PASSWORD)
    email = f"{factories.unique('old')}@test.lifebox.local"
    client_id = await factories.make_client(owner_conn)
    user_id = await factories.make_user(
        owner_conn, client_id, role="viewer", email=email, password_hash=weak
    )
    await _login(grpc_server, email, PASSWORD)
    async with tenant_transaction(owner_conn, None, staff=True):
        stored = await owner_conn.fetchval("SELECT password_hash FROM users WHERE id = $1", user_id)
    assert stored != weak
    assert not HASHER.check_needs_rehash(stored)
    await _login(grpc_server, email, PASSWORD)


async def test_login_attempts_are_rate_limited_per_client_address(
    database: Database, broker: EmbeddedMosquitto, owner_conn: asyncpg.Connection
) -> None:
    # Every test calls from 127.0.0.1 and the counters are shared: start this window afresh.
    await owner_conn.execute("DELETE FROM auth_rate_limits WHERE bucket LIKE '%:address:%'")
    server = await open_server(
        server_settings(
            database, broker, login_attempts_per_address=3, reset_requests_per_address=2
        )
    )
    try:
        for _ in range(3):
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await _login(server, f"{factories.unique('x')}@test.lifebox.local", "whatever-pw")
            assert failed.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as limited:
            await _login(server, f"{factories.unique('x')}@test.lifebox.local", "whatever-pw")
        code, details = error_of(limited.value)
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert details["QuotaFailure"].violations[0].subject == "login:address"
        for _ in range(2):
            await server.auth.RequestPasswordReset(
                auth_pb2.RequestPasswordResetRequest(
                    email=f"{factories.unique('x')}@test.lifebox.local"
                )
            )
        with pytest.raises(grpc.aio.AioRpcError) as reset_limited:
            await server.auth.RequestPasswordReset(
                auth_pb2.RequestPasswordResetRequest(email="someone@test.lifebox.local")
            )
        assert reset_limited.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        await close_server(server)
