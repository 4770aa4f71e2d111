"""Tokens over gRPC: forged access tokens are UNAUTHENTICATED; refresh rotation, reuse
detection and logout; key rotation by kid."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from lifebox.v1 import auth_pb2
from lifebox_grpc.auth import tokens
from lifebox_grpc.config import Settings
from lifebox_grpc.errors import Unauthenticated
from tests.helpers import factories
from tests.helpers.grpc import SIGNING_KEY, Account, Server, bearer, make_account, reason, sign_in


async def _account(server: Server, conn: asyncpg.Connection) -> Account:
    client_id = await factories.make_client(conn)
    return await sign_in(server, await make_account(conn, "client", client_id))


def _family(account: Account) -> str:
    """The session family of the account's sign-in (a token of ours names a live one)."""
    return str(jwt.decode(account.access_token, options={"verify_signature": False})["fam"])


def _claims(account: Account, **overrides: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    claims: dict[str, Any] = {
        "iss": "lifebox",
        "aud": "lifebox-api",
        "sub": str(account.user_id),
        "iat": now,
        "exp": now + timedelta(minutes=5),
        "jti": str(uuid.uuid4()),
        "typ": "access",
        "cid": str(account.client_id),
        "role": account.role,
        "fam": _family(account),
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _sign(
    claims: dict[str, Any], key: Any = SIGNING_KEY, alg: str = "HS256", kid: str = "k1"
) -> str:
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})


def _unsigned(claims: dict[str, Any]) -> str:
    return jwt.encode(claims, None, algorithm="none", headers={"kid": "k1"})


async def _get_me(server: Server, token: str) -> auth_pb2.GetMeResponse:
    return await server.auth.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(token), timeout=10)


async def test_a_well_formed_token_of_our_own_making_is_accepted(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    account = await _account(grpc_server, owner_conn)
    me = await _get_me(grpc_server, _sign(_claims(account)))
    assert me.user.id == str(account.user_id)


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda a: _unsigned(_claims(a)), id="alg-none"),
        pytest.param(lambda a: _sign(_claims(a), key="another-key-" + "z" * 40), id="wrong-key"),
        pytest.param(lambda a: _sign(_claims(a), alg="HS512"), id="alg-swap-hs512"),
        pytest.param(
            lambda a: _sign(
                _claims(a),
                key=rsa.generate_private_key(public_exponent=65537, key_size=2048),
                alg="RS256",
            ),
            id="alg-swap-rs256",
        ),
        pytest.param(
            lambda a: _sign(
                _claims(
                    a,
                    iat=datetime.now(UTC) - timedelta(hours=2),
                    exp=datetime.now(UTC) - timedelta(hours=1),
                )
            ),
            id="expired",
        ),
        pytest.param(lambda a: _sign(_claims(a, aud="someone-else")), id="wrong-audience"),
        pytest.param(lambda a: _sign(_claims(a, iss="someone-else")), id="wrong-issuer"),
        pytest.param(lambda a: _sign(_claims(a), kid="unknown"), id="unknown-kid"),
        pytest.param(lambda a: _sign(_claims(a, typ=None)), id="no-type"),
        pytest.param(lambda a: _sign(_claims(a, typ="refresh")), id="refresh-typed"),
        pytest.param(lambda a: a.refresh_token, id="refresh-token-as-access"),
        pytest.param(lambda a: _sign(_claims(a, sub=str(uuid.uuid4()))), id="unknown-user"),
        pytest.param(lambda a: _sign(_claims(a, cid=str(uuid.uuid4()))), id="other-client"),
        pytest.param(lambda a: _sign(_claims(a, fam=str(uuid.uuid4()))), id="unknown-session"),
        pytest.param(lambda a: _sign(_claims(a, fam=None)), id="no-session"),
        pytest.param(lambda a: "not-a-jwt", id="garbage"),
    ],
)
async def test_forged_tokens_are_unauthenticated(
    grpc_server: Server, owner_conn: asyncpg.Connection, forge: Any
) -> None:
    account = await _account(grpc_server, owner_conn)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _get_me(grpc_server, forge(account))
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert reason(refused.value) == "ERROR_REASON_INVALID_TOKEN"


async def test_missing_or_malformed_authorization_is_unauthenticated(grpc_server: Server) -> None:
    for metadata in ((), (("authorization", "Basic abc"),), (("authorization", "Bearer "),)):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await grpc_server.auth.GetMe(auth_pb2.GetMeRequest(), metadata=metadata)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_refresh_rotates_and_each_refresh_token_works_once(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    account = await _account(grpc_server, owner_conn)
    first = await grpc_server.auth.RefreshToken(
        auth_pb2.RefreshTokenRequest(refresh_token=account.refresh_token)
    )
    assert first.tokens.refresh_token != account.refresh_token
    await _get_me(grpc_server, first.tokens.access_token)
    second = await grpc_server.auth.RefreshToken(
        auth_pb2.RefreshTokenRequest(refresh_token=first.tokens.refresh_token)
    )
    assert second.tokens.access_token


async def test_reusing_a_refresh_token_revokes_its_whole_family(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    account = await _account(grpc_server, owner_conn)
    rotated = await grpc_server.auth.RefreshToken(
        auth_pb2.RefreshTokenRequest(refresh_token=account.refresh_token)
    )
    with pytest.raises(grpc.aio.AioRpcError) as reused:
        await grpc_server.auth.RefreshToken(
            auth_pb2.RefreshTokenRequest(refresh_token=account.refresh_token)
        )
    assert reused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert reason(reused.value) == "ERROR_REASON_INVALID_REFRESH_TOKEN"
    # The thief's (or the user's) newer token dies with the family.
    with pytest.raises(grpc.aio.AioRpcError) as revoked:
        await grpc_server.auth.RefreshToken(
            auth_pb2.RefreshTokenRequest(refresh_token=rotated.tokens.refresh_token)
        )
    assert revoked.value.code() == grpc.StatusCode.UNAUTHENTICATED
    async with owner_conn.transaction():
        await owner_conn.execute("SELECT set_config('lifebox.staff', 'on', true)")
        live = await owner_conn.fetchval(
            "SELECT count(*) FROM refresh_tokens WHERE user_id = $1 AND revoked_at IS NULL",
            account.user_id,
        )
    assert live == 0


async def test_logout_ends_the_session_and_all_sessions_ends_every_one(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    account = await _account(grpc_server, owner_conn)
    await grpc_server.auth.Logout(auth_pb2.LogoutRequest(refresh_token=account.refresh_token))
    with pytest.raises(grpc.aio.AioRpcError):
        await grpc_server.auth.RefreshToken(
            auth_pb2.RefreshTokenRequest(refresh_token=account.refresh_token)
        )
    other = await sign_in(grpc_server, account)
    third = await grpc_server.auth.Login(
        auth_pb2.LoginRequest(email=account.email, password="correct horse battery staple")
    )
    await grpc_server.auth.Logout(auth_pb2.LogoutRequest(all_sessions=True), metadata=other.md)
    for token in (other.refresh_token, third.tokens.refresh_token):
        with pytest.raises(grpc.aio.AioRpcError):
            await grpc_server.auth.RefreshToken(auth_pb2.RefreshTokenRequest(refresh_token=token))
    with pytest.raises(grpc.aio.AioRpcError) as anonymous:
        await grpc_server.auth.Logout(auth_pb2.LogoutRequest(all_sessions=True))
    assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_retired_keys_still_verify_by_kid_and_unknown_kids_do_not() -> None:
    old = Settings(jwt_signing_key="old-key-" + "o" * 40, jwt_key_id="k0")
    issued = tokens.issue_access_token(
        tokens.keyring_from_settings(old), uuid.uuid4(), None, "admin", uuid.uuid4(), 60
    )
    rotated = Settings(
        jwt_signing_key="new-key-" + "n" * 40,
        jwt_key_id="k1",
        jwt_previous_keys="k0=old-key-" + "o" * 40,
    )
    claims = tokens.verify_access_token(tokens.keyring_from_settings(rotated), issued.token)
    assert claims.role == "admin"
    dropped = Settings(jwt_signing_key="new-key-" + "n" * 40, jwt_key_id="k1")
    with pytest.raises(Unauthenticated):
        tokens.verify_access_token(tokens.keyring_from_settings(dropped), issued.token)


def test_retired_keys_must_be_as_long_as_the_current_one_in_prod() -> None:
    current = "new-key-" + "n" * 40

    def key_problems(previous: str, mode: str = "prod") -> list[str]:
        settings = Settings(mode=mode, jwt_signing_key=current, jwt_previous_keys=previous)
        return [p for p in settings.production_problems("serve") if "PREVIOUS_KEYS" in p]

    long_enough = "o" * 32
    assert key_problems(f"k0={long_enough}") == []
    assert key_problems(f"k0={long_enough},k9=short-old-key") == [
        "LIFEBOX_JWT_PREVIOUS_KEYS: the key of kid 'k9' must be at least 32 characters"
    ]
    assert key_problems("k0") == ["LIFEBOX_JWT_PREVIOUS_KEYS must be 'kid=key,kid=key'"]
    assert key_problems("k9=short-old-key", mode="dev") == []
