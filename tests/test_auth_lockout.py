"""The login lockout: per (e-mail, client address), the same for an unknown e-mail as for a
real one at every step, one password-hash verification per attempt, a lock that expires
and starts counting again, a per-e-mail progressive delay instead of a lock for everyone,
and failed ChangePassword attempts counted with failed logins."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import grpc
import pytest

from lifebox.v1 import auth_pb2
from lifebox_grpc.auth import passwords
from lifebox_grpc.auth.ratelimit import LoginLockout, digest
from lifebox_grpc.auth.sessions import AuthFlows, Caller
from lifebox_grpc.errors import DomainError, FailedPrecondition
from lifebox_grpc.runtime.mosquitto import EmbeddedMosquitto
from lifebox_grpc.services.common import peer_address
from tests.helpers import factories
from tests.helpers.grpc import (
    PASSWORD,
    Server,
    close_server,
    make_account,
    open_server,
    reason,
    server_settings,
    sign_in,
)
from tests.helpers.services import Database

WRONG = "not the password at all"
ATTACKER = "198.51.100.23"
_HINT = re.compile(r"retry in (\d+)s")


@pytest.fixture(scope="module")
async def server(database: Database, broker: EmbeddedMosquitto) -> AsyncIterator[Server]:
    """Default lockout, without the progressive delay (its growth is tested on its own)."""
    running = await open_server(server_settings(database, broker, login_delay_base_seconds=0))
    yield running
    await close_server(running)


def _flows(server: Server) -> AuthFlows:
    assert server.running.auth is not None
    return server.running.auth


@dataclass(frozen=True)
class Outcome:
    """What a client sees of one attempt (digits of the message apart), and its cost."""

    code: grpc.StatusCode
    reason: str
    message: str
    hint: int | None
    verifications: int


async def _login(server: Server, email: str, password: str) -> Outcome:
    before = passwords.verification_count()
    try:
        await server.auth.Login(auth_pb2.LoginRequest(email=email, password=password), timeout=10)
    except grpc.aio.AioRpcError as exc:
        details = exc.details() or ""
        hint = _HINT.search(details)
        return Outcome(
            exc.code(),
            reason(exc),
            re.sub(r"\d+", "N", details),
            int(hint.group(1)) if hint else None,
            passwords.verification_count() - before,
        )
    return Outcome(grpc.StatusCode.OK, "", "", None, passwords.verification_count() - before)


async def _expire_locks(conn: asyncpg.Connection, email: str, seconds: int) -> None:
    """Move every counter of ``email`` ``seconds`` into the past (time passing, no sleep)."""
    await conn.execute(
        "UPDATE auth_rate_limits SET window_start = window_start - make_interval(secs => $2) "
        "WHERE bucket LIKE '%' || $1 || '%'",
        digest(email),
        seconds,
    )


def _same(real: Outcome, unknown: Outcome) -> None:
    assert (real.code, real.reason, real.message) == (unknown.code, unknown.reason, unknown.message)
    assert (real.hint is None) == (unknown.hint is None)
    if real.hint is not None and unknown.hint is not None:
        assert abs(real.hint - unknown.hint) <= 1
    assert real.verifications == unknown.verifications == 1


async def test_unknown_and_real_emails_read_the_same_through_the_whole_lockout_sequence(
    server: Server, owner_conn: asyncpg.Connection
) -> None:
    account = await make_account(owner_conn, "client", await factories.make_client(owner_conn))
    real, unknown = account.email, f"{factories.unique('ghost')}@test.lifebox.local"
    s = server.settings

    async def step(password: str) -> Outcome:
        first = await _login(server, real, password)
        second = await _login(server, unknown, password)
        _same(first, second)
        return first

    for _ in range(2):  # the first lock, then again once it has expired
        for _ in range(s.login_max_failures):
            assert (await step(WRONG)).reason == "ERROR_REASON_INVALID_CREDENTIALS"
        for password in (WRONG, PASSWORD):  # locked: even the right password is refused
            locked = await step(password)
            assert locked.code == grpc.StatusCode.FAILED_PRECONDITION
            assert locked.reason == "ERROR_REASON_ACCOUNT_LOCKED"
            assert locked.hint is not None
            assert s.login_lock_seconds - 5 <= locked.hint <= s.login_lock_seconds
        for email in (real, unknown):
            await _expire_locks(owner_conn, email, s.login_lock_seconds)
    assert (await _login(server, real, PASSWORD)).code == grpc.StatusCode.OK


async def test_an_attacker_address_failing_forever_never_stops_the_right_password(
    server: Server, owner_conn: asyncpg.Connection
) -> None:
    account = await make_account(owner_conn, "viewer", await factories.make_client(owner_conn))
    flows = _flows(server)
    attacker = Caller(address=ATTACKER, user_agent="guesser")
    refused: list[str] = []
    for _ in range(4 * server.settings.login_max_failures):
        with pytest.raises(DomainError) as failed:
            await flows.login(account.email, WRONG, attacker)
        refused.append(failed.value.reason)
    assert refused[-1] == "ERROR_REASON_ACCOUNT_LOCKED"
    # The attacker's address is locked even for the right password...
    with pytest.raises(FailedPrecondition):
        await flows.login(account.email, PASSWORD, attacker)
    # ...while the owner, from their own address, signs in (over gRPC, from 127.0.0.1)
    # and can keep doing so, and the attacker stays locked.
    for _ in range(2):
        assert (await _login(server, account.email, PASSWORD)).code == grpc.StatusCode.OK
        with pytest.raises(FailedPrecondition):
            await flows.login(account.email, WRONG, attacker)


async def test_failed_change_password_attempts_count_toward_the_lockout(
    server: Server, owner_conn: asyncpg.Connection
) -> None:
    account = await sign_in(
        server, await make_account(owner_conn, "operator", await factories.make_client(owner_conn))
    )
    new = "an entirely new passphrase 7"
    for _ in range(server.settings.login_max_failures):
        before = passwords.verification_count()
        with pytest.raises(grpc.aio.AioRpcError) as wrong:
            await server.auth.ChangePassword(
                auth_pb2.ChangePasswordRequest(current_password=WRONG, new_password=new),
                metadata=account.md,
            )
        assert wrong.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert passwords.verification_count() - before == 1
    locked = await _login(server, account.email, PASSWORD)
    assert locked.reason == "ERROR_REASON_ACCOUNT_LOCKED"
    with pytest.raises(grpc.aio.AioRpcError) as change:
        await server.auth.ChangePassword(
            auth_pb2.ChangePasswordRequest(current_password=PASSWORD, new_password=new),
            metadata=account.md,
        )
    assert reason(change.value) == "ERROR_REASON_ACCOUNT_LOCKED"
    # Another address is not locked out: the owner still signs in there.
    session = await _flows(server).login(account.email, PASSWORD, Caller("203.0.113.5", None))
    assert session.user.id == account.user_id


async def test_an_email_failing_from_many_addresses_slows_down_and_is_never_locked(
    server: Server, database: Database, broker: EmbeddedMosquitto
) -> None:
    lockout = LoginLockout(
        server_settings(
            database,
            broker,
            login_max_failures=3,
            login_delay_base_seconds=0.25,
            login_delay_max_seconds=1.0,
        )
    )
    email = f"{factories.unique('spread')}@test.lifebox.local"
    delays = []
    async with server.running.pool.acquire() as conn:
        for i in range(7):
            gate = await lockout.enter(conn, email, f"198.51.100.{i + 1}")
            assert not gate.locked
            delays.append(gate.delay)
            await lockout.failed(conn, email)
        # One address's repeated failures lock that address only.
        for _ in range(3):
            assert not (await lockout.enter(conn, email, ATTACKER)).locked
        assert (await lockout.enter(conn, email, ATTACKER)).locked
        assert not (await lockout.enter(conn, email, "203.0.113.77")).locked
    assert delays == [0.0, 0.0, 0.0, 0.25, 0.5, 1.0, 1.0]


@pytest.mark.parametrize(
    ("peer", "address"),
    [
        ("ipv4:10.1.2.3:5000", "10.1.2.3"),
        ("ipv6:%5B2001:db8::1%5D:40342", "2001:db8::1"),  # as grpcio 1.85 writes it
        ("ipv6:[2001:db8::2]:1", "2001:db8::2"),
        ("ipv6:%5B::ffff:10.0.0.7%5D:9", "10.0.0.7"),
        ("unix:/tmp/sock", None),
    ],
)
def test_the_client_address_is_read_from_every_kind_of_peer(peer: str, address: str | None) -> None:
    assert peer_address(peer) == address


async def test_ipv6_callers_are_locked_per_address_too(
    server: Server, owner_conn: asyncpg.Connection
) -> None:
    """Review finding: every IPv6 peer read as no address, so one IPv6 attacker locked the
    owner out for every IPv6 client."""
    account = await make_account(owner_conn, "viewer", await factories.make_client(owner_conn))
    flows = _flows(server)
    attacker = Caller(address=peer_address("ipv6:%5B2001:db8::bad%5D:1"), user_agent="x")
    owner = Caller(address=peer_address("ipv6:%5B2001:db8::600d%5D:2"), user_agent="y")
    for _ in range(server.settings.login_max_failures + 1):
        with pytest.raises(DomainError):
            await flows.login(account.email, WRONG, attacker)
    await flows.login(account.email, PASSWORD, owner)
