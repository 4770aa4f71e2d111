"""Users, roles and role permissions: all their SQL.

Every function takes an explicit connection already inside a scoped transaction
(:func:`lifebox_grpc.store.scope.scoped_transaction`) and, where it reads tenant rows, the
scope's ``client_filter`` as well: the query is scoped *and* row-level security holds.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from lifebox_grpc.errors import AlreadyExists, InvalidArgument, NotFound
from lifebox_grpc.store.pool import fetchrow_in_tenant

_COLUMNS = (
    "id, client_id, email, role, display_name, status, failed_login_count, locked_until, "
    "last_login_at, password_changed_at, created_at, updated_at"
)


@dataclass(frozen=True)
class User:
    """A user as stored, without the password hash."""

    id: uuid.UUID
    client_id: uuid.UUID | None
    email: str
    role: str
    display_name: str | None
    status: str
    failed_login_count: int
    locked_until: datetime | None
    last_login_at: datetime | None
    password_changed_at: datetime
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class LoginCandidate:
    """A user found by e-mail before sign-in, with what sign-in needs to decide."""

    user: User
    password_hash: str


@dataclass(frozen=True)
class RoleRecord:
    """A role of the catalogue and its permissions."""

    name: str
    description: str
    is_platform_staff: bool
    rank: int
    permissions: tuple[str, ...]


def _user(row: Mapping[str, Any]) -> User:
    return User(**{name: row[name] for name in User.__dataclass_fields__})


async def find_login_candidate(conn: asyncpg.Connection, email: str) -> LoginCandidate | None:
    """The user with this e-mail (case-insensitive) in any tenant.

    Sign-in happens before a tenant is known, so this goes through the migration's named
    pre-authentication function, the only cross-tenant read not made by staff.
    """
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS}, password_hash FROM lifebox_auth_user_by_email($1)", email
    )
    if row is None:
        return None
    return LoginCandidate(_user(row), row["password_hash"])


async def get_user(
    conn: asyncpg.Connection,
    user_id: uuid.UUID,
    client_filter: uuid.UUID | None,
    *,
    staff: bool = False,
) -> User | None:
    """The user if ``client_filter`` (None: any client) admits it; ``staff`` as in
    :func:`pool.fetchrow_in_tenant` for a read outside a transaction."""
    row = await fetchrow_in_tenant(
        conn,
        client_filter,
        staff,
        f"SELECT {_COLUMNS} FROM users WHERE id = $1 AND ($2::uuid IS NULL OR client_id = $2)",
        user_id,
        client_filter,
    )
    return _user(row) if row else None


async def get_password_hash(conn: asyncpg.Connection, user_id: uuid.UUID) -> str | None:
    value = await conn.fetchval("SELECT password_hash FROM users WHERE id = $1", user_id)
    return str(value) if value is not None else None


async def record_login_success(
    conn: asyncpg.Connection, user_id: uuid.UUID, new_password_hash: str | None
) -> User:
    """Reset the failure count, stamp the login, and store a rehashed password if given."""
    row = await conn.fetchrow(
        f"""
        UPDATE users SET failed_login_count = 0, locked_until = NULL, last_login_at = now(),
            password_hash = coalesce($2, password_hash)
        WHERE id = $1
        RETURNING {_COLUMNS}
        """,
        user_id,
        new_password_hash,
    )
    if row is None:
        raise NotFound("user not found")
    return _user(row)


async def set_password(conn: asyncpg.Connection, user_id: uuid.UUID, password_hash: str) -> bool:
    """Replace the password; also clears a lock (the user proved control of the account)."""
    result = await conn.execute(
        "UPDATE users SET password_hash = $2, password_changed_at = now(), "
        "failed_login_count = 0, locked_until = NULL WHERE id = $1",
        user_id,
        password_hash,
    )
    return bool(result.endswith(" 1"))


async def create_user(
    conn: asyncpg.Connection,
    *,
    client_id: uuid.UUID | None,
    email: str,
    password_hash: str,
    role: str,
    display_name: str | None,
) -> User:
    try:
        row = await conn.fetchrow(
            f"""
            INSERT INTO users (client_id, email, password_hash, role, display_name)
            VALUES ($1, $2, $3, $4, $5)
            RETURNING {_COLUMNS}
            """,
            client_id,
            email,
            password_hash,
            role,
            display_name,
        )
    except asyncpg.UniqueViolationError as exc:
        raise AlreadyExists("a user with this email already exists") from exc
    except asyncpg.ForeignKeyViolationError as exc:
        raise NotFound("client not found") from exc
    assert row is not None
    return _user(row)


async def list_users(
    conn: asyncpg.Connection,
    client_filter: uuid.UUID | None,
    *,
    after: tuple[str, uuid.UUID] | None,
    limit: int,
) -> list[User]:
    """Users ordered by (lower(email), id), starting after the ``after`` key."""
    rows = await conn.fetch(
        f"""
        SELECT {_COLUMNS} FROM users
        WHERE ($1::uuid IS NULL OR client_id = $1)
          AND ($2::text IS NULL OR (lower(email), id) > ($2, $3::uuid))
        ORDER BY lower(email), id
        LIMIT $4
        """,
        client_filter,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    return [_user(row) for row in rows]


# The columns UpdateUser may change; anything else is a programming error, not user input.
_UPDATABLE = frozenset({"email", "display_name", "role", "status"})


async def update_user(
    conn: asyncpg.Connection,
    user_id: uuid.UUID,
    client_filter: uuid.UUID | None,
    changes: Mapping[str, object],
) -> User | None:
    """Apply ``changes`` (column → value); None when the user is not in scope."""
    unknown = set(changes) - _UPDATABLE
    if unknown:
        raise ValueError(f"not updatable: {sorted(unknown)}")
    if not changes:
        return await get_user(conn, user_id, client_filter)
    names = sorted(changes)
    sets = ", ".join(f"{name} = ${i + 3}" for i, name in enumerate(names))
    try:
        row = await conn.fetchrow(
            f"UPDATE users SET {sets} WHERE id = $1 AND ($2::uuid IS NULL OR client_id = $2) "
            f"RETURNING {_COLUMNS}",
            user_id,
            client_filter,
            *(changes[name] for name in names),
        )
    except asyncpg.UniqueViolationError as exc:
        raise AlreadyExists("a user with this email already exists") from exc
    except asyncpg.CheckViolationError as exc:
        # Only a role change across the staff/tenant line trips this constraint.
        raise InvalidArgument.field(
            "user.role", "platform staff roles belong to no client; other roles need one"
        ) from exc
    return _user(row) if row else None


async def delete_user(
    conn: asyncpg.Connection, user_id: uuid.UUID, client_filter: uuid.UUID | None
) -> bool:
    result = await conn.execute(
        "DELETE FROM users WHERE id = $1 AND ($2::uuid IS NULL OR client_id = $2)",
        user_id,
        client_filter,
    )
    return bool(result == "DELETE 1")


async def count_active_super_users(conn: asyncpg.Connection) -> int:
    """Active super users (staff path only): the last one may not be demoted or deleted."""
    value = await conn.fetchval(
        "SELECT count(*) FROM users WHERE role = 'super_user' AND status = 'active'"
    )
    return int(value or 0)


async def role_permissions(conn: asyncpg.Connection, role: str) -> frozenset[str]:
    rows = await conn.fetch("SELECT permission FROM role_permissions WHERE role = $1", role)
    return frozenset(row["permission"] for row in rows)


async def assigned_device_ids(conn: asyncpg.Connection, user_id: uuid.UUID) -> list[uuid.UUID]:
    rows = await conn.fetch(
        "SELECT device_id FROM user_device_assignments WHERE user_id = $1 ORDER BY device_id",
        user_id,
    )
    return [row["device_id"] for row in rows]


@dataclass(frozen=True)
class PrincipalRecord:
    """Everything a principal is made of, read in one statement: the user, their client's
    status, their role's permissions, (for operators and viewers) their assigned devices and
    their live session families."""

    user_id: uuid.UUID
    client_id: uuid.UUID | None
    email: str
    role: str
    status: str
    password_changed_at: datetime
    client_status: str | None
    permissions: frozenset[str]
    assigned_device_ids: tuple[uuid.UUID, ...]
    # Session families with a live refresh token (the newest of the family, unrevoked and
    # unexpired): an access token works only while its family is one of them.
    live_families: frozenset[uuid.UUID]


# A family's live refresh token is its unrotated, unrevoked one (index of migration 0038).
_PRINCIPAL_SQL = """
SELECT u.id, u.client_id, u.email, u.role, u.status, u.password_changed_at,
       (SELECT c.status FROM clients c WHERE c.id = u.client_id) AS client_status,
       ARRAY(SELECT p.permission FROM role_permissions p WHERE p.role = u.role) AS permissions,
       CASE WHEN u.role IN ('operator', 'viewer') THEN
           ARRAY(SELECT a.device_id FROM user_device_assignments a
                 WHERE a.user_id = u.id ORDER BY a.device_id)
       END AS devices,
       ARRAY(SELECT r.family_id FROM refresh_tokens r
             WHERE r.user_id = u.id AND r.revoked_at IS NULL AND r.replaced_by IS NULL
               AND r.expires_at > now()) AS families
FROM users u
WHERE u.id = $1 AND ($2::uuid IS NULL OR u.client_id = $2)
"""


async def principal_record(
    conn: asyncpg.Connection,
    user_id: uuid.UUID,
    client_filter: uuid.UUID | None,
    *,
    staff: bool = False,
) -> PrincipalRecord | None:
    """The user's principal as stored now (one round trip), or None when there is no user;
    ``staff`` as in :func:`get_user`."""
    row = await fetchrow_in_tenant(
        conn, client_filter, staff, _PRINCIPAL_SQL, user_id, client_filter
    )
    if row is None:
        return None
    return PrincipalRecord(
        user_id=row["id"],
        client_id=row["client_id"],
        email=row["email"],
        role=row["role"],
        status=row["status"],
        password_changed_at=row["password_changed_at"],
        client_status=row["client_status"],
        permissions=frozenset(row["permissions"]),
        assigned_device_ids=tuple(row["devices"] or ()),
        live_families=frozenset(row["families"]),
    )


async def list_roles(conn: asyncpg.Connection) -> list[RoleRecord]:
    rows = await conn.fetch(
        """
        SELECT r.name, r.description, r.is_platform_staff, r.rank,
               coalesce(array_agg(p.permission ORDER BY p.permission)
                        FILTER (WHERE p.permission IS NOT NULL), '{}') AS permissions
        FROM roles r LEFT JOIN role_permissions p ON p.role = r.name
        GROUP BY r.name ORDER BY r.rank DESC
        """
    )
    return [
        RoleRecord(
            row["name"],
            row["description"],
            row["is_platform_staff"],
            row["rank"],
            tuple(row["permissions"]),
        )
        for row in rows
    ]


async def replace_role_permissions(
    conn: asyncpg.Connection, role: str, permissions: Sequence[str]
) -> None:
    """Make ``permissions`` the role's whole set (staff path: role_permissions is global)."""
    await conn.execute(
        "DELETE FROM role_permissions WHERE role = $1 AND NOT (permission = ANY($2::text[]))",
        role,
        list(permissions),
    )
    await conn.execute(
        "INSERT INTO role_permissions (role, permission) SELECT $1, unnest($2::text[]) "
        "ON CONFLICT DO NOTHING",
        role,
        list(permissions),
    )
