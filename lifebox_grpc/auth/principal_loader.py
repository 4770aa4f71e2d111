"""The principal behind a verified access token, as the database says now, checked against
the token on every call.

What makes a token worthless at once (:class:`Unauthenticated`): its user deleted or
disabled, or moved to another tenant; the password changed after the token was issued; the
end of its session family (logout, refresh-token reuse, a password change or reset: the
family has no live refresh token left). A suspended client's users get FAILED_PRECONDITION.

The record may come from the :class:`PrincipalCache`, which a change empties by NOTIFY
before the user's next call (migrations 0031 and 0038); the record lists the user's live
session families, and a family it does not list sends the load to the database, so a new
sign-in is never refused by a record read before it, and an ended one never accepted from
the cache once its NOTIFY (or this process's own invalidation) has come.
"""

from __future__ import annotations

import asyncpg

from lifebox_grpc.auth.principal import Principal
from lifebox_grpc.auth.principal_cache import PrincipalCache
from lifebox_grpc.auth.tokens import AccessClaims
from lifebox_grpc.errors import FailedPrecondition, Unauthenticated
from lifebox_grpc.store import users as user_store

ACTIVE = "active"


async def load_principal(
    pool: asyncpg.Pool, cache: PrincipalCache, claims: AccessClaims
) -> Principal:
    """The principal ``claims`` stand for; no round trip when the cache holds its user with
    the token's family live."""
    record = cache.get(claims.user_id)
    if record is None or claims.family_id not in record.live_families:
        # A family the cached record does not list began after it was read (a new sign-in)
        # or has ended: only the database can tell.
        cache.start()
        ticket = cache.ticket()
        async with pool.acquire() as conn:  # one statement that scopes itself
            # Only staff tokens carry no client (we signed it): the staff path, said here.
            record = await user_store.principal_record(
                conn, claims.user_id, claims.client_id, staff=claims.client_id is None
            )
        if record is not None:
            cache.put(ticket, record)
    return principal_of(record, claims)


def principal_of(record: user_store.PrincipalRecord | None, claims: AccessClaims) -> Principal:
    """Check ``record`` against the token (nothing token-specific is cached)."""
    if record is None or record.status != ACTIVE or record.client_id != claims.client_id:
        raise Unauthenticated("the account behind this token is no longer active")
    if claims.issued_at < record.password_changed_at.replace(microsecond=0):
        raise Unauthenticated("the password changed since this token was issued")
    if claims.family_id not in record.live_families:
        raise Unauthenticated("the session of this token has ended; sign in again")
    if record.client_id is not None and record.client_status != ACTIVE:
        raise FailedPrecondition(
            "the client of this account is suspended", reason="ERROR_REASON_CLIENT_SUSPENDED"
        )
    return Principal(
        user_id=record.user_id,
        email=record.email,
        role=record.role,
        client_id=record.client_id,
        permissions=record.permissions,
        assigned_device_ids=record.assigned_device_ids,
        session_family=claims.family_id,
    )
