"""Password hashing with argon2id (argon2-cffi), at or above OWASP's recommended cost,
and the password policy.

Hashing costs tens of milliseconds of CPU: async callers use :func:`verify_in_thread` and
:func:`hash_in_thread` so the event loop keeps serving other calls meanwhile.
"""

from __future__ import annotations

import asyncio
import functools
import threading

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

# OWASP Password Storage Cheat Sheet: argon2id, m=19 MiB, t=2, p=1 at least.
HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)

MAX_PASSWORD_LENGTH = 128

# The most common passwords long enough to pass the length rule (NIST 800-63B: refuse
# known-compromised values); a deployment can extend this list.
_COMMON = frozenset(
    {
        "password1234",
        "123456789012",
        "qwertyuiop12",
        "passwordpassword",
        "iloveyou1234",
        "adminadmin12",
        "lifeboxlifebox",
        "changemechangeme",
        "welcome12345",
        "letmein12345",
    }
)


def hash_password(password: str) -> str:
    return HASHER.hash(password)


class _Counter:
    """A thread-safe count (verifications run in worker threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value = 0

    def add(self) -> None:
        with self._lock:
            self._value += 1

    @property
    def value(self) -> int:
        return self._value


_verifications = _Counter()


def verification_count() -> int:
    """How many password hashes this process has verified (real and dummy alike): each
    sign-in attempt costs exactly one, whatever its outcome (tests count them)."""
    return _verifications.value


def verify_password(stored_hash: str, password: str) -> bool:
    """Constant-time check; a malformed stored hash is a mismatch, not a crash."""
    _verifications.add()
    try:
        return HASHER.verify(stored_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    return HASHER.check_needs_rehash(stored_hash)


@functools.cache
def dummy_hash() -> str:
    """A real hash at current parameters, verified when the e-mail is unknown so that an
    unknown account costs the same time as a wrong password."""
    return HASHER.hash("lifebox timing equaliser")


async def verify_in_thread(stored_hash: str | None, password: str) -> bool:
    """:func:`verify_password` off the event loop; None verifies against the dummy hash
    (and fails), so both branches take the same time."""
    if stored_hash is None:
        await asyncio.to_thread(verify_password, dummy_hash(), password)
        return False
    return await asyncio.to_thread(verify_password, stored_hash, password)


async def hash_in_thread(password: str) -> str:
    return await asyncio.to_thread(hash_password, password)


def policy_violations(password: str, *, min_length: int, email: str | None = None) -> list[str]:
    """Why ``password`` is refused (empty when it is acceptable).

    Length-based, after NIST 800-63B: at least ``min_length`` and at most 128 characters,
    not only whitespace, not the account's e-mail (or its local part), not a common password.
    """
    problems = []
    if len(password) < min_length:
        problems.append(f"must be at least {min_length} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        problems.append(f"must be at most {MAX_PASSWORD_LENGTH} characters")
    if password and not password.strip():
        problems.append("must not be only whitespace")
    lowered = password.lower()
    if email and lowered in (email.lower(), email.lower().partition("@")[0]):
        problems.append("must not be the account's email")
    if lowered in _COMMON:
        problems.append("is too common")
    return problems
