"""Rate limits on sign-in and password-reset attempts, and the login lockout.

Counters live in PostgreSQL (``store/ratelimits.py``) so every `serve` replica shares them.
Buckets name a SHA-256 of the e-mail and of the address, never the values themselves, and
an e-mail is counted the same whether or not an account has it. An exceeded rate limit
raises :class:`ResourceExhausted` (RESOURCE_EXHAUSTED with QuotaFailure and RetryInfo).

The login lockout (:class:`LoginLockout`) is per (e-mail, client address), so that nobody
can lock an owner out from elsewhere; across addresses an e-mail under attack only slows
down (a progressive delay), it never refuses the right password.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

import asyncpg

from lifebox_grpc.config import Settings
from lifebox_grpc.errors import ResourceExhausted
from lifebox_grpc.store import ratelimits

# One call in this many also deletes windows that ended long ago.
_CLEANUP_ONE_IN = 200


def digest(value: str) -> str:
    """What a bucket names instead of an e-mail or an address (normalised, truncated SHA-256)."""
    return hashlib.sha256(value.strip().lower().encode()).hexdigest()[:40]


def account_bucket(action: str, email: str) -> str:
    return f"{action}:account:{digest(email)}"


def address_bucket(action: str, address: str) -> str:
    return f"{action}:address:{digest(address)}"


def pair_bucket(action: str, email: str, address: str | None) -> str:
    return f"{action}:pair:{digest(email)}:{digest(address or '')}"


class AuthRateLimiter:
    """Counts an attempt in each of its buckets and refuses once one is over its limit.

    Sign-in is limited per client address only: a limit per account would let anyone lock
    its owner out (the account is protected by :class:`LoginLockout` instead).
    """

    def __init__(self, settings: Settings) -> None:
        self.window = settings.auth_rate_window_seconds
        self.stale_after = 2 * max(self.window, settings.login_lock_seconds)
        self.limits: dict[str, tuple[int | None, int]] = {
            "login": (None, settings.login_attempts_per_address),
            "reset": (settings.reset_requests_per_account, settings.reset_requests_per_address),
        }

    async def hit(
        self, conn: asyncpg.Connection, action: str, *, email: str | None, address: str | None
    ) -> None:
        """Count one ``action`` attempt ("login" or "reset"); raise when over a limit.

        Runs outside any transaction so the count survives the attempt failing.
        """
        per_account, per_address = self.limits[action]
        checks = []
        if email and per_account is not None:
            checks.append((account_bucket(action, email), per_account, f"{action}:account"))
        # Callers whose address is unknown share one bucket: never a way around the limit.
        checks.append(
            (address_bucket(action, address or "unknown"), per_address, f"{action}:address")
        )
        for bucket, limit, subject in checks:
            count = await ratelimits.count_attempt(conn, bucket, self.window)
            if count.attempts > limit:
                raise ResourceExhausted(
                    f"too many {action} attempts; retry later",
                    retry_after=count.resets_in,
                    subject=subject,
                )
        if secrets.randbelow(_CLEANUP_ONE_IN) == 0:
            await ratelimits.delete_stale(conn, self.stale_after)


@dataclass(frozen=True)
class LoginGate:
    """What :meth:`LoginLockout.enter` decided for one password attempt."""

    # Seconds until this (e-mail, address) may try again; 0 when the attempt may proceed.
    locked_for: float
    # Seconds to wait before the password is checked (the e-mail's progressive delay).
    delay: float

    @property
    def locked(self) -> bool:
        return self.locked_for > 0


class LoginLockout:
    """Failed-password accounting for Login and ChangePassword, by e-mail, known or not.

    - Per (e-mail, client address): ``login_max_failures`` attempts without a success in
      ``login_lock_seconds`` lock that pair; the lock lasts ``login_lock_seconds`` from the
      last attempt let through, then the count starts again. An attempt is counted before
      its password is checked, so parallel guesses cannot slip past the count; a success
      clears the pair.
    - Per e-mail, from every address: once ``login_max_failures`` wrong passwords fall in
      one window, each further attempt waits ``login_delay_base_seconds`` doubled per
      failure beyond, at most ``login_delay_max_seconds``, and is then checked as usual.
    """

    def __init__(self, settings: Settings) -> None:
        self.max_failures = settings.login_max_failures
        self.window = settings.login_lock_seconds
        self.delay_base = settings.login_delay_base_seconds
        self.delay_max = settings.login_delay_max_seconds

    def delay_for(self, failures: int) -> float:
        """The wait before checking a password after ``failures`` recent wrong ones."""
        beyond = failures - self.max_failures
        if beyond < 0 or self.delay_base <= 0:
            return 0.0
        return float(min(self.delay_max, self.delay_base * 2.0 ** min(beyond, 32)))

    async def enter(self, conn: asyncpg.Connection, email: str, address: str | None) -> LoginGate:
        """Count one attempt of ``address`` on ``email`` and say whether it may proceed."""
        pair = await ratelimits.count_attempt(
            conn, pair_bucket("login", email, address), self.window, restart_at=self.max_failures
        )
        failures = await ratelimits.current_attempts(
            conn, account_bucket("login-fail", email), self.window
        )
        locked_for = pair.resets_in if pair.attempts > self.max_failures else 0.0
        return LoginGate(locked_for=locked_for, delay=self.delay_for(failures))

    async def failed(self, conn: asyncpg.Connection, email: str) -> None:
        """A wrong password for ``email`` (its attempt was already counted by :meth:`enter`)."""
        await ratelimits.count_attempt(conn, account_bucket("login-fail", email), self.window)

    async def succeeded(self, conn: asyncpg.Connection, email: str, address: str | None) -> None:
        """The right password: this address starts afresh (the e-mail's delay stays)."""
        await ratelimits.clear_bucket(conn, pair_bucket("login", email, address))
