"""Signed JWTs for access and refresh, and opaque tokens for password resets.

Promises:
- Only HS256 is accepted (an allow-list, so ``alg: none`` and algorithm swaps fail).
- Every token carries ``kid``, ``iss``, ``aud``, ``exp``, ``iat``, ``jti``, ``sub`` and a
  ``typ`` claim; a refresh token is never accepted where an access token is expected.
- Access and refresh tokens name their session family (``fam``): an access token without
  one is invalid, and the principal load refuses one whose family has ended.
- Keys rotate by ``kid``: the current key signs, retired keys (``jwt_previous_keys``) still
  verify until their tokens expire.
- Refresh and reset tokens are stored only as SHA-256 hashes (:func:`token_hash`).
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import jwt

from lifebox_grpc.config import Mode, Settings, parse_previous_keys
from lifebox_grpc.errors import Unauthenticated

ALGORITHM = "HS256"
_REQUIRED_CLAIMS = ["exp", "iat", "iss", "aud", "sub", "jti", "typ"]


class TokenType(StrEnum):
    """The ``typ`` claim: what a JWT may be used for."""

    ACCESS = "access"
    REFRESH = "refresh"


class KeyringError(RuntimeError):
    """No usable signing key is configured."""


@dataclass(frozen=True)
class Keyring:
    """The key that signs (``kid``) and every key that verifies, by kid."""

    kid: str
    keys: dict[str, bytes]
    issuer: str
    audience: str

    @property
    def signing_key(self) -> bytes:
        return self.keys[self.kid]


def keyring_from_settings(settings: Settings) -> Keyring:
    """Build the keyring; in dev a missing key comes from the home's generated secrets."""
    if settings.jwt_signing_key is not None:
        current = settings.jwt_signing_key.get_secret_value()
    elif settings.mode is Mode.DEV:
        from lifebox_grpc.runtime.home import load_or_create_secrets, prepare_home

        current = load_or_create_secrets(prepare_home(settings.home)).jwt_signing_key
    else:
        raise KeyringError("LIFEBOX_JWT_SIGNING_KEY is required outside dev mode")
    if not current:
        raise KeyringError("LIFEBOX_JWT_SIGNING_KEY is empty")
    keys = {settings.jwt_key_id: current.encode()}
    if settings.jwt_previous_keys is not None:
        try:
            previous = parse_previous_keys(settings.jwt_previous_keys.get_secret_value())
        except ValueError as exc:
            raise KeyringError(str(exc)) from exc
        for kid, key in previous.items():
            keys.setdefault(kid, key.encode())
    return Keyring(settings.jwt_key_id, keys, settings.jwt_issuer, settings.jwt_audience)


@dataclass(frozen=True)
class IssuedToken:
    """A signed token, its id and when it stops working."""

    token: str
    jti: uuid.UUID
    expires_at: datetime


@dataclass(frozen=True)
class AccessClaims:
    """What a verified access token says about its bearer, and the sign-in session (refresh
    token family) it belongs to: it works only while that family is live."""

    user_id: uuid.UUID
    client_id: uuid.UUID | None
    role: str
    family_id: uuid.UUID
    jti: uuid.UUID
    issued_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class RefreshClaims:
    """What a verified refresh token names: its user and session family."""

    user_id: uuid.UUID
    family_id: uuid.UUID
    jti: uuid.UUID
    expires_at: datetime


def _issue(
    keyring: Keyring, typ: TokenType, subject: uuid.UUID, ttl: int, extra: dict[str, Any]
) -> IssuedToken:
    now = datetime.now(UTC).replace(microsecond=0)
    jti = uuid.uuid4()
    expires = now + timedelta(seconds=ttl)
    claims = {
        "iss": keyring.issuer,
        "aud": keyring.audience,
        "sub": str(subject),
        "iat": now,
        "exp": expires,
        "jti": str(jti),
        "typ": typ.value,
        **extra,
    }
    token = jwt.encode(
        claims, keyring.signing_key, algorithm=ALGORITHM, headers={"kid": keyring.kid}
    )
    return IssuedToken(token, jti, expires)


def issue_access_token(
    keyring: Keyring,
    user_id: uuid.UUID,
    client_id: uuid.UUID | None,
    role: str,
    family_id: uuid.UUID,
    ttl: int,
) -> IssuedToken:
    """A short-lived access token naming the user, their client, role and session family."""
    return _issue(
        keyring,
        TokenType.ACCESS,
        user_id,
        ttl,
        {"cid": str(client_id) if client_id else None, "role": role, "fam": str(family_id)},
    )


def issue_refresh_token(
    keyring: Keyring, user_id: uuid.UUID, family_id: uuid.UUID, ttl: int
) -> IssuedToken:
    """A refresh token of a session family; stored by hash, usable once."""
    return _issue(keyring, TokenType.REFRESH, user_id, ttl, {"fam": str(family_id)})


def _verify(keyring: Keyring, token: str, typ: TokenType) -> dict[str, Any]:
    # Every failure reads the same to the caller: which check failed is not their business.
    invalid = Unauthenticated(f"invalid or expired {typ.value} token")
    try:
        header = jwt.get_unverified_header(token)
        key = keyring.keys.get(str(header.get("kid", "")))
        if key is None or header.get("alg") != ALGORITHM:
            raise invalid
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            audience=keyring.audience,
            issuer=keyring.issuer,
            options={"require": _REQUIRED_CLAIMS},
        )
    except jwt.PyJWTError as exc:
        raise invalid from exc
    if claims.get("typ") != typ.value:
        raise invalid
    return claims


def _uuid(value: object) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError as exc:
        raise Unauthenticated("invalid token") from exc


def verify_access_token(keyring: Keyring, token: str) -> AccessClaims:
    """The claims of a valid access token; :class:`Unauthenticated` for anything else."""
    claims = _verify(keyring, token, TokenType.ACCESS)
    cid = claims.get("cid")
    return AccessClaims(
        user_id=_uuid(claims["sub"]),
        client_id=_uuid(cid) if cid else None,
        role=str(claims.get("role", "")),
        family_id=_uuid(claims.get("fam")),
        jti=_uuid(claims["jti"]),
        issued_at=datetime.fromtimestamp(int(claims["iat"]), UTC),
        expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
    )


def verify_refresh_token(keyring: Keyring, token: str) -> RefreshClaims:
    """The claims of a well-formed refresh token (whether it is still unused is the store's)."""
    claims = _verify(keyring, token, TokenType.REFRESH)
    return RefreshClaims(
        user_id=_uuid(claims["sub"]),
        family_id=_uuid(claims.get("fam")),
        jti=_uuid(claims["jti"]),
        expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
    )


def new_reset_token() -> str:
    """An opaque, URL-safe password reset token with 256 bits of randomness."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> bytes:
    """The SHA-256 digest under which a refresh or reset token is stored."""
    return hashlib.sha256(token.encode()).digest()
