"""Rate limits on login and password-reset attempts, per account and per client address.

Counters live in PostgreSQL (``store/ratelimits.py``) so every `serve` replica shares them.
Buckets name a SHA-256 of the e-mail, never the e-mail itself. An exceeded limit raises
:class:`ResourceExhausted` (RESOURCE_EXHAUSTED with QuotaFailure and RetryInfo).
"""

from __future__ import annotations

import hashlib
import secrets

import asyncpg

from lifebox_grpc.config import Settings
from lifebox_grpc.errors import ResourceExhausted
from lifebox_grpc.store import ratelimits

# One call in this many also deletes windows that ended long ago.
_CLEANUP_ONE_IN = 200


def _digest(value: str) -> str:
    return hashlib.sha256(value.strip().lower().encode()).hexdigest()[:40]


def account_bucket(action: str, email: str) -> str:
    return f"{action}:account:{_digest(email)}"


def address_bucket(action: str, address: str) -> str:
    return f"{action}:address:{_digest(address)}"


class AuthRateLimiter:
    """Counts an attempt in each of its buckets and refuses once one is over its limit."""

    def __init__(self, settings: Settings) -> None:
        self.window = settings.auth_rate_window_seconds
        self.limits = {
            "login": (settings.login_attempts_per_account, settings.login_attempts_per_address),
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
        if email:
            checks.append((account_bucket(action, email), per_account, f"{action}:account"))
        if address:
            checks.append((address_bucket(action, address), per_address, f"{action}:address"))
        for bucket, limit, subject in checks:
            count = await ratelimits.count_attempt(conn, bucket, self.window)
            if count.attempts > limit:
                raise ResourceExhausted(
                    f"too many {action} attempts; retry later",
                    retry_after=count.resets_in,
                    subject=subject,
                )
        if secrets.randbelow(_CLEANUP_ONE_IN) == 0:
            await ratelimits.delete_stale(conn, self.window * 2)
