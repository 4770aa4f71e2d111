"""Device secrets and mosquitto's ``$7$`` PBKDF2-HMAC-SHA512 password hashes.

``$7$<iterations>$<base64 salt>$<base64 digest>``: the 12 salt bytes are characters of the
base64 alphabet, so a broker that takes the salt as text (EMQX's pbkdf2 sha512 authn) and one
that decodes the base64 field (mosquitto) use the same bytes. The iterations are mosquitto's
default, 101: a secret is a 256-bit random token, which no number of iterations makes harder
to guess, and every iteration is paid again at each device connect.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

ITERATIONS = 101
SALT_CHARS = 12  # mosquitto 2.0 takes a 12-byte salt only
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


@dataclass(frozen=True)
class PasswordHash:
    """A hash's parts (stored in their own columns) and its composed ``$7$`` form."""

    iterations: int
    salt: str
    digest: str

    @property
    def encoded(self) -> str:
        salt_b64 = base64.b64encode(self.salt.encode("ascii")).decode("ascii")
        return f"$7${self.iterations}${salt_b64}${self.digest}"


def new_secret() -> str:
    """A device secret: 256 random bits, URL-safe text (returned to the caller once)."""
    return secrets.token_urlsafe(32)


def _digest(secret: str, salt: str, iterations: int) -> str:
    raw = hashlib.pbkdf2_hmac("sha512", secret.encode(), salt.encode("ascii"), iterations, 64)
    return base64.b64encode(raw).decode("ascii")


def hash_secret(secret: str, *, iterations: int = ITERATIONS) -> PasswordHash:
    salt = "".join(secrets.choice(_ALPHABET) for _ in range(SALT_CHARS))
    return PasswordHash(iterations, salt, _digest(secret, salt, iterations))


def verify(secret: str, stored: PasswordHash) -> bool:
    expected = _digest(secret, stored.salt, stored.iterations)
    return hmac.compare_digest(expected, stored.digest)
