"""Password reset and change over gRPC: the outbox, single use, expiry, session revocation,
the policy, and no token in the logs."""

from __future__ import annotations

import logging
import re
import stat
from pathlib import Path

import asyncpg
import grpc
import pytest

from lifebox.v1 import auth_pb2
from tests.helpers import factories
from tests.helpers.grpc import PASSWORD, Account, Server, make_account, reason, sign_in
from tests.helpers.wait import async_wait_until

NEW_PASSWORD = "a brand new passphrase 42"
_TOKEN = re.compile(r"/reset-password#token=([A-Za-z0-9_-]+)")


def _mail_for(outbox: Path, email: str) -> list[Path]:
    if not outbox.exists():
        return []
    return [p for p in outbox.iterdir() if f"To: {email}\n" in p.read_text()]


async def _request_reset(server: Server, account: Account) -> tuple[Path, str]:
    await server.auth.RequestPasswordReset(
        auth_pb2.RequestPasswordResetRequest(email=account.email)
    )

    async def delivered() -> list[Path]:
        return _mail_for(server.outbox, account.email)

    mails = await async_wait_until(delivered, 10, "the reset mail in the outbox")
    text = mails[-1].read_text()
    match = _TOKEN.search(text)
    assert match, text
    return mails[-1], match.group(1)


async def _account(server: Server, conn: asyncpg.Connection) -> Account:
    client_id = await factories.make_client(conn)
    return await sign_in(server, await make_account(conn, "operator", client_id))


async def test_reset_mail_lands_in_the_outbox_privately_and_never_in_logs(
    grpc_server: Server, owner_conn: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    account = await _account(grpc_server, owner_conn)
    caplog.set_level(logging.DEBUG)
    mail, token = await _request_reset(grpc_server, account)
    assert stat.S_IMODE(mail.stat().st_mode) == 0o600
    assert (
        f"{grpc_server.settings.public_base_url}/reset-password#token={token}" in mail.read_text()
    )
    logged = "\n".join(r.getMessage() + str(r.__dict__) for r in caplog.records)
    assert token not in logged
    async with owner_conn.transaction():
        await owner_conn.execute("SELECT set_config('lifebox.staff', 'on', true)")
        stored = await owner_conn.fetch(
            "SELECT token_hash FROM password_reset_tokens WHERE user_id = $1", account.user_id
        )
    assert stored
    assert all(token.encode() not in bytes(r["token_hash"]) for r in stored)


async def test_unknown_email_gets_the_same_answer_and_no_mail(grpc_server: Server) -> None:
    email = f"{factories.unique('nobody')}@test.lifebox.local"
    reply = await grpc_server.auth.RequestPasswordReset(
        auth_pb2.RequestPasswordResetRequest(email=email)
    )
    assert reply == auth_pb2.RequestPasswordResetResponse()
    await grpc_server.running.auth.drain()  # type: ignore[union-attr]
    assert _mail_for(grpc_server.outbox, email) == []


async def test_reset_works_once_and_ends_every_session(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    account = await _account(grpc_server, owner_conn)
    _, token = await _request_reset(grpc_server, account)
    await grpc_server.auth.ResetPassword(
        auth_pb2.ResetPasswordRequest(reset_token=token, new_password=NEW_PASSWORD)
    )
    with pytest.raises(grpc.aio.AioRpcError) as again:
        await grpc_server.auth.ResetPassword(
            auth_pb2.ResetPasswordRequest(reset_token=token, new_password=NEW_PASSWORD + "!")
        )
    assert again.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert reason(again.value) == "ERROR_REASON_INVALID_RESET_TOKEN"
    with pytest.raises(grpc.aio.AioRpcError):
        await grpc_server.auth.RefreshToken(
            auth_pb2.RefreshTokenRequest(refresh_token=account.refresh_token)
        )
    with pytest.raises(grpc.aio.AioRpcError):
        await sign_in(grpc_server, account, PASSWORD)
    await sign_in(grpc_server, account, NEW_PASSWORD)


async def test_an_expired_reset_token_is_refused(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    account = await _account(grpc_server, owner_conn)
    _, token = await _request_reset(grpc_server, account)
    async with owner_conn.transaction():
        await owner_conn.execute("SELECT set_config('lifebox.staff', 'on', true)")
        await owner_conn.execute(
            "UPDATE password_reset_tokens SET created_at = now() - interval '2 hours', "
            "expires_at = now() - interval '1 hour' WHERE user_id = $1",
            account.user_id,
        )
    with pytest.raises(grpc.aio.AioRpcError) as expired:
        await grpc_server.auth.ResetPassword(
            auth_pb2.ResetPasswordRequest(reset_token=token, new_password=NEW_PASSWORD)
        )
    assert reason(expired.value) == "ERROR_REASON_INVALID_RESET_TOKEN"
    await sign_in(grpc_server, account, PASSWORD)


async def test_change_password_checks_the_current_one_and_the_policy(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    account = await _account(grpc_server, owner_conn)
    with pytest.raises(grpc.aio.AioRpcError) as wrong:
        await grpc_server.auth.ChangePassword(
            auth_pb2.ChangePasswordRequest(current_password="nope", new_password=NEW_PASSWORD),
            metadata=account.md,
        )
    assert wrong.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    for weak in ("short", "password1234", account.email, " " * 20):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await grpc_server.auth.ChangePassword(
                auth_pb2.ChangePasswordRequest(current_password=PASSWORD, new_password=weak),
                metadata=account.md,
            )
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert reason(refused.value) == "ERROR_REASON_WEAK_PASSWORD"


async def test_change_password_ends_other_sessions_but_keeps_this_one(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    account = await _account(grpc_server, owner_conn)
    other = await grpc_server.auth.Login(
        auth_pb2.LoginRequest(email=account.email, password=PASSWORD)
    )
    await grpc_server.auth.ChangePassword(
        auth_pb2.ChangePasswordRequest(current_password=PASSWORD, new_password=NEW_PASSWORD),
        metadata=account.md,
    )
    with pytest.raises(grpc.aio.AioRpcError):
        await grpc_server.auth.RefreshToken(
            auth_pb2.RefreshTokenRequest(refresh_token=other.tokens.refresh_token)
        )
    # Access tokens from before the change are void; this session renews through its refresh.
    renewed = await grpc_server.auth.RefreshToken(
        auth_pb2.RefreshTokenRequest(refresh_token=account.refresh_token)
    )
    me = await grpc_server.auth.GetMe(
        auth_pb2.GetMeRequest(),
        metadata=(("authorization", f"Bearer {renewed.tokens.access_token}"),),
    )
    assert me.user.id == str(account.user_id)
    await sign_in(grpc_server, account, NEW_PASSWORD)
