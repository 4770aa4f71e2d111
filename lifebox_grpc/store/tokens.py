"""Refresh tokens and password reset tokens: all their SQL. Only hashes are stored."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

_REFRESH_COLUMNS = (
    "id, user_id, client_id, family_id, parent_id, replaced_by, issued_at, expires_at, revoked_at"
)
_RESET_COLUMNS = "id, user_id, client_id, created_at, expires_at, used_at"


@dataclass(frozen=True)
class RefreshToken:
    """One refresh token of a session family (never the token itself)."""

    id: uuid.UUID
    user_id: uuid.UUID
    client_id: uuid.UUID | None
    family_id: uuid.UUID
    parent_id: uuid.UUID | None
    replaced_by: uuid.UUID | None
    issued_at: datetime
    expires_at: datetime
    revoked_at: datetime | None

    @property
    def spent(self) -> bool:
        """Used (rotated) or revoked: presenting it again is reuse."""
        return self.replaced_by is not None or self.revoked_at is not None


@dataclass(frozen=True)
class ResetToken:
    """One password reset token (never the token itself)."""

    id: uuid.UUID
    user_id: uuid.UUID
    client_id: uuid.UUID | None
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None


def _refresh(row: Mapping[str, Any]) -> RefreshToken:
    return RefreshToken(**{name: row[name] for name in RefreshToken.__dataclass_fields__})


def _reset(row: Mapping[str, Any]) -> ResetToken:
    return ResetToken(**{name: row[name] for name in ResetToken.__dataclass_fields__})


async def insert_refresh_token(
    conn: asyncpg.Connection,
    *,
    token_id: uuid.UUID,
    user_id: uuid.UUID,
    client_id: uuid.UUID | None,
    token_hash: bytes,
    family_id: uuid.UUID,
    parent_id: uuid.UUID | None,
    expires_at: datetime,
    user_agent: str | None,
    ip: str | None,
) -> None:
    await conn.execute(
        """
        INSERT INTO refresh_tokens
            (id, user_id, client_id, token_hash, family_id, parent_id, expires_at, user_agent, ip)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::inet)
        """,
        token_id,
        user_id,
        client_id,
        token_hash,
        family_id,
        parent_id,
        expires_at,
        user_agent,
        ip,
    )


async def find_refresh_token(conn: asyncpg.Connection, token_hash: bytes) -> RefreshToken | None:
    """The token with this hash in any tenant (pre-authentication, via the named function)."""
    row = await conn.fetchrow(
        f"SELECT {_REFRESH_COLUMNS} FROM lifebox_auth_refresh_token($1)", token_hash
    )
    return _refresh(row) if row else None


async def lock_refresh_token(conn: asyncpg.Connection, token_id: uuid.UUID) -> RefreshToken | None:
    """Re-read the token under a row lock, so two concurrent rotations can't both win."""
    row = await conn.fetchrow(
        f"SELECT {_REFRESH_COLUMNS} FROM refresh_tokens WHERE id = $1 FOR UPDATE", token_id
    )
    return _refresh(row) if row else None


async def mark_rotated(conn: asyncpg.Connection, token_id: uuid.UUID, new_id: uuid.UUID) -> None:
    await conn.execute(
        "UPDATE refresh_tokens SET replaced_by = $2, last_used_at = now() WHERE id = $1",
        token_id,
        new_id,
    )


async def revoke_family(conn: asyncpg.Connection, family_id: uuid.UUID, reason: str) -> int:
    """Revoke every live token of a session family; returns how many."""
    result = await conn.execute(
        "UPDATE refresh_tokens SET revoked_at = now(), revoked_reason = $2 "
        "WHERE family_id = $1 AND revoked_at IS NULL",
        family_id,
        reason,
    )
    return int(result.split()[-1])


async def revoke_user_sessions(
    conn: asyncpg.Connection,
    user_id: uuid.UUID,
    reason: str,
    *,
    keep_family: uuid.UUID | None = None,
) -> int:
    """Revoke every live refresh token of a user (but ``keep_family``); returns how many."""
    result = await conn.execute(
        "UPDATE refresh_tokens SET revoked_at = now(), revoked_reason = $2 "
        "WHERE user_id = $1 AND revoked_at IS NULL "
        "AND ($3::uuid IS NULL OR family_id <> $3)",
        user_id,
        reason,
        keep_family,
    )
    return int(result.split()[-1])


async def insert_reset_token(
    conn: asyncpg.Connection,
    *,
    user_id: uuid.UUID,
    client_id: uuid.UUID | None,
    token_hash: bytes,
    expires_at: datetime,
    ip: str | None,
) -> None:
    await conn.execute(
        "INSERT INTO password_reset_tokens (user_id, client_id, token_hash, expires_at, "
        "requested_ip) VALUES ($1, $2, $3, $4, $5::inet)",
        user_id,
        client_id,
        token_hash,
        expires_at,
        ip,
    )


async def find_reset_token(conn: asyncpg.Connection, token_hash: bytes) -> ResetToken | None:
    """The reset token with this hash in any tenant (pre-authentication, named function)."""
    row = await conn.fetchrow(
        f"SELECT {_RESET_COLUMNS} FROM lifebox_auth_reset_token($1)", token_hash
    )
    return _reset(row) if row else None


async def consume_reset_token(conn: asyncpg.Connection, token_id: uuid.UUID) -> bool:
    """Mark the token used if it is unused and unexpired; False when it was not."""
    result = await conn.execute(
        "UPDATE password_reset_tokens SET used_at = now() "
        "WHERE id = $1 AND used_at IS NULL AND expires_at > now()",
        token_id,
    )
    return bool(result == "UPDATE 1")


async def expire_user_reset_tokens(conn: asyncpg.Connection, user_id: uuid.UUID) -> None:
    """Spend every outstanding reset token of a user (after a reset or password change)."""
    await conn.execute(
        "UPDATE password_reset_tokens SET used_at = now() WHERE user_id = $1 AND used_at IS NULL",
        user_id,
    )
