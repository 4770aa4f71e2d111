"""The sign-in flows: login, refresh rotation, logout, password reset and change, and the
principal behind an access token.

Knows neither gRPC nor SQL: it calls the stores inside scoped transactions and raises
domain errors. Messages never say whether an e-mail exists.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from lifebox_grpc.auth import passwords, principal_loader, tokens
from lifebox_grpc.auth.principal import Principal
from lifebox_grpc.auth.principal_cache import PrincipalCache
from lifebox_grpc.auth.principal_loader import ACTIVE
from lifebox_grpc.auth.ratelimit import AuthRateLimiter, LoginGate, LoginLockout
from lifebox_grpc.auth.reset_sender import ResetMessage, ResetSender, reset_link
from lifebox_grpc.config import Settings
from lifebox_grpc.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    Unauthenticated,
)
from lifebox_grpc.runtime.endpoints import resolve_endpoints
from lifebox_grpc.store import clients as client_store
from lifebox_grpc.store import tokens as token_store
from lifebox_grpc.store import users as user_store
from lifebox_grpc.store.scope import Scope, scoped_transaction

log = logging.getLogger(__name__)

SUSPENDED = "suspended"


@dataclass(frozen=True)
class Caller:
    """Where an unauthenticated request comes from (for rate limits and the session row)."""

    address: str | None
    user_agent: str | None


@dataclass(frozen=True)
class Session:
    """A signed-in session: its two tokens and the user."""

    access: tokens.IssuedToken
    refresh: tokens.IssuedToken
    user: user_store.User


def _invalid_credentials() -> Unauthenticated:
    return Unauthenticated(
        "email or password is incorrect", reason="ERROR_REASON_INVALID_CREDENTIALS"
    )


def _invalid_refresh() -> Unauthenticated:
    return Unauthenticated(
        "refresh token is invalid, expired or already used; sign in again",
        reason="ERROR_REASON_INVALID_REFRESH_TOKEN",
    )


def _invalid_reset() -> Unauthenticated:
    return Unauthenticated(
        "reset token is invalid, expired or already used; request a new one",
        reason="ERROR_REASON_INVALID_RESET_TOKEN",
    )


def _locked(retry_after: float) -> FailedPrecondition:
    return FailedPrecondition(
        "sign-in locked for this address after repeated failed passwords; "
        f"retry in {int(retry_after) + 1}s",
        reason="ERROR_REASON_ACCOUNT_LOCKED",
    )


def _scope_of(client_id: uuid.UUID | None) -> Scope:
    return Scope(client_id)


class AuthFlows:
    """Every authentication flow, over one connection pool."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: Settings,
        keyring: tokens.Keyring,
        sender: ResetSender,
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.keyring = keyring
        self.sender = sender
        self.limiter = AuthRateLimiter(settings)
        self.lockout = LoginLockout(settings)
        self._deliveries: set[asyncio.Task[None]] = set()
        self.principals = PrincipalCache(
            resolve_endpoints(settings).app_dsn, settings.principal_cache_seconds
        )

    # -- policy ---------------------------------------------------------------------------

    def check_password_policy(self, field: str, password: str, email: str | None) -> None:
        problems = passwords.policy_violations(
            password, min_length=self.settings.password_min_length, email=email
        )
        if problems:
            raise InvalidArgument(
                [FieldViolation(field, "; ".join(problems))], reason="ERROR_REASON_WEAK_PASSWORD"
            )

    # -- sessions -------------------------------------------------------------------------

    async def _open_session(
        self,
        conn: asyncpg.Connection,
        user: user_store.User,
        caller: Caller,
        *,
        family_id: uuid.UUID,
        parent_id: uuid.UUID | None,
    ) -> Session:
        s = self.settings
        refresh = tokens.issue_refresh_token(
            self.keyring, user.id, family_id, s.refresh_token_ttl_seconds
        )
        await token_store.insert_refresh_token(
            conn,
            token_id=refresh.jti,
            user_id=user.id,
            client_id=user.client_id,
            token_hash=tokens.token_hash(refresh.token),
            family_id=family_id,
            parent_id=parent_id,
            expires_at=refresh.expires_at,
            user_agent=(caller.user_agent or "")[:256] or None,
            ip=caller.address,
        )
        access = tokens.issue_access_token(
            self.keyring, user.id, user.client_id, user.role, family_id, s.access_token_ttl_seconds
        )
        return Session(access, refresh, user)

    async def _require_client_active(
        self, conn: asyncpg.Connection, client_id: uuid.UUID | None
    ) -> None:
        if client_id is not None and await client_store.client_status(conn, client_id) != ACTIVE:
            raise FailedPrecondition(
                "the client of this account is suspended", reason="ERROR_REASON_CLIENT_SUSPENDED"
            )

    async def _verify_attempt(
        self, gate: LoginGate, email: str, address: str | None, stored: str | None, password: str
    ) -> bool:
        """Check one password attempt that :meth:`LoginLockout.enter` let in (or locked).

        Exactly one hash verification whatever the case (no account: the dummy hash), the
        e-mail's delay first, with no connection held while waiting; a locked pair raises
        only after that, so a locked, an unknown and a real e-mail cost and read the same.
        """
        if gate.delay > 0:
            await asyncio.sleep(gate.delay)
        matched = await passwords.verify_in_thread(stored, password)
        if gate.locked:
            raise _locked(gate.locked_for)
        async with self.pool.acquire() as conn:
            if matched:
                await self.lockout.succeeded(conn, email, address)
            else:
                await self.lockout.failed(conn, email)
        return matched

    async def login(self, email: str, password: str, caller: Caller) -> Session:
        """Check the password and open a session, or raise without saying which part failed.

        An unknown e-mail takes the same path as a real one up to a wrong password's answer.
        """
        async with self.pool.acquire() as conn:
            await self.limiter.hit(conn, "login", email=None, address=caller.address)
            gate = await self.lockout.enter(conn, email, caller.address)
            candidate = await user_store.find_login_candidate(conn, email)
        stored = candidate.password_hash if candidate is not None else None
        if not await self._verify_attempt(gate, email, caller.address, stored, password):
            raise _invalid_credentials()
        assert candidate is not None  # only a stored hash can match
        user = candidate.user
        # The password is right: from here on, saying why sign-in is refused leaks nothing.
        if user.status != ACTIVE:
            raise FailedPrecondition(
                "this account is disabled", reason="ERROR_REASON_ACCOUNT_DISABLED"
            )
        rehashed = (
            await passwords.hash_in_thread(password)
            if passwords.needs_rehash(candidate.password_hash)
            else None
        )
        async with (
            self.pool.acquire() as conn,
            scoped_transaction(conn, _scope_of(user.client_id)),
        ):
            await self._require_client_active(conn, user.client_id)
            user = await user_store.record_login_success(conn, user.id, rehashed)
            return await self._open_session(
                conn, user, caller, family_id=uuid.uuid4(), parent_id=None
            )

    async def refresh(self, refresh_token: str, caller: Caller) -> Session:
        """Rotate a refresh token; reuse of a spent one revokes its whole family."""
        try:
            claims = tokens.verify_refresh_token(self.keyring, refresh_token)
        except Unauthenticated as exc:
            raise _invalid_refresh() from exc
        digest = tokens.token_hash(refresh_token)
        reused = False
        async with self.pool.acquire() as conn:
            found = await token_store.find_refresh_token(conn, digest)
            if found is None or found.id != claims.jti:
                raise _invalid_refresh()
            async with scoped_transaction(conn, _scope_of(found.client_id)):
                row = await token_store.lock_refresh_token(conn, found.id)
                if row is None:
                    raise _invalid_refresh()
                if row.spent:
                    revoked = await token_store.revoke_family(conn, row.family_id, "reuse")
                    log.warning(
                        "refresh token reuse: session family revoked",
                        extra={"user_id": str(row.user_id), "revoked": revoked},
                    )
                    reused = True
                    user_id = row.user_id
                elif row.expires_at <= datetime.now(UTC):
                    raise _invalid_refresh()
                else:
                    user = await user_store.get_user(conn, row.user_id, row.client_id)
                    if user is None or user.status != ACTIVE:
                        raise _invalid_refresh()
                    await self._require_client_active(conn, user.client_id)
                    session = await self._open_session(
                        conn, user, caller, family_id=row.family_id, parent_id=row.id
                    )
                    await token_store.mark_rotated(conn, row.id, session.refresh.jti)
                    return session
        # Raised after the commit: the family's revocation must stick.
        assert reused
        self.principals.invalidate(user_id)
        raise _invalid_refresh()

    async def logout(
        self, refresh_token: str | None, principal: Principal | None, all_sessions: bool
    ) -> None:
        """End one session (by its refresh token) or all of the caller's sessions."""
        async with self.pool.acquire() as conn:
            if all_sessions:
                if principal is None:
                    raise Unauthenticated("ending every session needs an access token")
                async with scoped_transaction(conn, _scope_of(principal.client_id)):
                    await token_store.revoke_user_sessions(conn, principal.user_id, "logout_all")
                self.principals.invalidate(principal.user_id)
                return
            if not refresh_token:
                raise InvalidArgument.field("refresh_token", "required unless all_sessions")
            try:
                tokens.verify_refresh_token(self.keyring, refresh_token)
            except Unauthenticated as exc:
                raise _invalid_refresh() from exc
            found = await token_store.find_refresh_token(conn, tokens.token_hash(refresh_token))
            if principal is not None and found is not None and found.user_id != principal.user_id:
                # A signed-in caller may end only their own sessions; another's reads unknown.
                raise NotFound("session not found")
            if found is None:
                return  # already pruned: the session is over either way
            async with scoped_transaction(conn, _scope_of(found.client_id)):
                await token_store.revoke_family(conn, found.family_id, "logout")
            self.principals.invalidate(found.user_id)

    # -- passwords ------------------------------------------------------------------------

    async def request_password_reset(self, email: str, caller: Caller) -> None:
        """Queue a reset link if the e-mail has an active account; same answer otherwise."""
        async with self.pool.acquire() as conn:
            await self.limiter.hit(conn, "reset", email=email, address=caller.address)
            candidate = await user_store.find_login_candidate(conn, email)
        if candidate is None or candidate.user.status != ACTIVE:
            return
        # Issue and deliver in the background: the answer must not take longer for a real
        # account than for an unknown one.
        task = asyncio.create_task(self._issue_reset(candidate.user, caller))
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)

    async def _issue_reset(self, user: user_store.User, caller: Caller) -> None:
        try:
            token = tokens.new_reset_token()
            expires = datetime.now(UTC) + timedelta(seconds=self.settings.reset_token_ttl_seconds)
            async with (
                self.pool.acquire() as conn,
                scoped_transaction(conn, _scope_of(user.client_id)),
            ):
                await token_store.insert_reset_token(
                    conn,
                    user_id=user.id,
                    client_id=user.client_id,
                    token_hash=tokens.token_hash(token),
                    expires_at=expires,
                    ip=caller.address,
                )
            link = reset_link(self.settings.public_base_url, token)
            await self.sender.send(ResetMessage(user.email, link, expires))
            log.info("password reset issued", extra={"user_id": str(user.id)})
        except Exception:
            log.exception("password reset delivery failed", extra={"user_id": str(user.id)})

    async def drain(self) -> None:
        """Wait for queued reset deliveries."""
        if self._deliveries:
            await asyncio.gather(*self._deliveries, return_exceptions=True)

    async def close(self) -> None:
        """Server shutdown: finish reset deliveries and stop the principal listener."""
        await self.drain()
        await self.principals.close()

    async def reset_password(self, reset_token: str, new_password: str, caller: Caller) -> None:
        """Spend a reset token, set the password and end every session of the user."""
        self.check_password_policy("new_password", new_password, None)
        async with self.pool.acquire() as conn:
            await self.limiter.hit(conn, "reset", email=None, address=caller.address)
            found = await token_store.find_reset_token(conn, tokens.token_hash(reset_token))
            if found is None:
                raise _invalid_reset()
            new_hash = await passwords.hash_in_thread(new_password)
            async with scoped_transaction(conn, _scope_of(found.client_id)):
                if not await token_store.consume_reset_token(conn, found.id):
                    raise _invalid_reset()
                await user_store.set_password(conn, found.user_id, new_hash)
                await token_store.expire_user_reset_tokens(conn, found.user_id)
                await token_store.revoke_user_sessions(conn, found.user_id, "password_reset")
            self.principals.invalidate(found.user_id)

    async def change_password(
        self, principal: Principal, current: str, new: str, caller: Caller
    ) -> None:
        """Check the current password, set the new one, end the caller's other sessions.

        A wrong current password counts toward the same lockout as a failed login (of the
        principal's e-mail from the caller's address): a stolen access token is no oracle.
        """
        self.check_password_policy("new_password", new, principal.email)
        scope = _scope_of(principal.client_id)
        async with self.pool.acquire() as conn:
            await self.limiter.hit(conn, "login", email=None, address=caller.address)
            gate = await self.lockout.enter(conn, principal.email, caller.address)
            async with scoped_transaction(conn, scope):
                stored = await user_store.get_password_hash(conn, principal.user_id)
        if not await self._verify_attempt(gate, principal.email, caller.address, stored, current):
            raise InvalidArgument.field("current_password", "does not match")
        new_hash = await passwords.hash_in_thread(new)
        async with self.pool.acquire() as conn, scoped_transaction(conn, scope):
            await user_store.set_password(conn, principal.user_id, new_hash)
            await token_store.expire_user_reset_tokens(conn, principal.user_id)
            await token_store.revoke_user_sessions(
                conn, principal.user_id, "password_change", keep_family=principal.session_family
            )
        self.principals.invalidate(principal.user_id)

    # -- principals -----------------------------------------------------------------------

    async def load_principal(self, claims: tokens.AccessClaims) -> Principal:
        """The principal an access token stands for, as the database says now
        (:func:`lifebox_grpc.auth.principal_loader.load_principal`, over :attr:`principals`,
        which this process empties itself whenever it ends a session)."""
        return await principal_loader.load_principal(self.pool, self.principals, claims)
