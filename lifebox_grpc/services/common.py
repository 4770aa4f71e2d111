"""What every service module shares: request validation, paging, field masks, time
conversion, the caller's address, and the scoped connection a handler's store work runs on.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any
from urllib.parse import unquote

import asyncpg
from google.protobuf import field_mask_pb2, timestamp_pb2

from lifebox_grpc.auth.principal import Principal
from lifebox_grpc.auth.sessions import Caller
from lifebox_grpc.errors import ErrorCollector, ResourceExhausted
from lifebox_grpc.store.scope import Scope, scoped_transaction

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
MAX_EMAIL_LENGTH = 254
# Deliberately loose (one @, no spaces, a dot in the domain): the reset mail is the real check.
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")


def scope_of(principal: Principal) -> Scope:
    """Staff act on the staff path; everybody else on their own client."""
    return Scope.staff() if principal.is_staff else Scope.tenant(_client_of(principal))


def _client_of(principal: Principal) -> uuid.UUID:
    assert principal.client_id is not None, "a non-staff principal always has a client"
    return principal.client_id


@asynccontextmanager
async def scoped(pool: asyncpg.Pool, principal: Principal) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection in a transaction scoped to what ``principal`` may see."""
    async with pool.acquire() as conn, scoped_transaction(conn, scope_of(principal)) as tx:
        yield tx


# -- validation ---------------------------------------------------------------------------


def require_work_within(subject: str, work: int, most: int, advice: str) -> None:
    """RESOURCE_EXHAUSTED (QuotaFailure on ``subject``) when a call would compute ``work``
    values, more than the ``most`` one call may; ``advice`` says how to ask for less. The
    one cap on the size of a call's work, for every expensive RPC."""
    if work > most:
        raise ResourceExhausted(
            f"this call would compute {work} values, more than the {most} one call may: {advice}",
            # The same call would fail again; RetryInfo still comes with every
            # RESOURCE_EXHAUSTED, so a client that retries blindly waits a second, not 0.
            retry_after=1.0,
            subject=subject,
        )


def parse_uuid(errors: ErrorCollector, field: str, value: str, *, required: bool = True) -> Any:
    """The UUID in ``value``; records a violation (and returns None) when it is not one."""
    if not value:
        if required:
            errors.add(field, "required")
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        errors.add(field, "must be a UUID")
        return None


def require_uuid(field: str, value: str) -> uuid.UUID:
    """A UUID or InvalidArgument at once (for requests with a single id)."""
    errors = ErrorCollector()
    parsed = parse_uuid(errors, field, value)
    errors.raise_if_any()
    assert isinstance(parsed, uuid.UUID)
    return parsed


def check_text(
    errors: ErrorCollector, field: str, value: str, *, max_length: int, required: bool = True
) -> None:
    if required and not value.strip():
        errors.add(field, "required")
    elif len(value) > max_length:
        errors.add(field, f"must be at most {max_length} characters")
    elif value != value.strip():
        errors.add(field, "must not start or end with whitespace")


def check_email(errors: ErrorCollector, field: str, value: str) -> None:
    if not value:
        errors.add(field, "required")
    elif len(value) > MAX_EMAIL_LENGTH:
        errors.add(field, f"must be at most {MAX_EMAIL_LENGTH} characters")
    elif not _EMAIL.match(value):
        errors.add(field, "must be an email address")


def page_size(errors: ErrorCollector, value: int) -> int:
    """The effective page size: default when 0, a violation when negative or over the cap."""
    if value < 0:
        errors.add("page_size", "must not be negative")
    elif value > MAX_PAGE_SIZE:
        errors.add("page_size", f"must be at most {MAX_PAGE_SIZE}")
    return value or DEFAULT_PAGE_SIZE


def encode_page_token(key: list[str]) -> str:
    """An opaque cursor: the sort key of the last row of the page."""
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode().rstrip("=")


def decode_page_token(errors: ErrorCollector, token: str, arity: int) -> list[str] | None:
    if not token:
        return None
    try:
        padded = token + "=" * (-len(token) % 4)
        key = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, binascii.Error):
        key = None
    if not (isinstance(key, list) and len(key) == arity and all(isinstance(k, str) for k in key)):
        errors.add("page_token", "is not a token this API returned")
        return None
    return key


def mask_paths(
    errors: ErrorCollector, mask: field_mask_pb2.FieldMask, allowed: Iterable[str]
) -> list[str]:
    """The mask's paths; each unknown path and an empty mask are violations."""
    allowed = frozenset(allowed)
    paths = list(dict.fromkeys(mask.paths))
    if not paths:
        errors.add("update_mask", f"name at least one of: {', '.join(sorted(allowed))}")
    for path in paths:
        if path not in allowed:
            errors.add("update_mask", f"unknown or read-only path {path!r}")
    return paths


# -- mapping ------------------------------------------------------------------------------


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


# -- the caller -----------------------------------------------------------------------------


def peer_address(peer: str) -> str | None:
    """The IP of a gRPC peer string (``ipv4:1.2.3.4:5``, ``ipv6:[::1]:5``, which grpcio
    percent-encodes as ``ipv6:%5B::1%5D:5``); an IPv4 address mapped into IPv6 is given as
    IPv4. None for anything else (a Unix socket)."""
    kind, _, rest = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return None
    host = unquote(rest).rpartition(":")[0].strip("[]")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return str(mapped or ip)


def caller_of(context: Any) -> Caller:
    """Address and user agent of the caller of ``context``, for rate limits and sessions."""
    agent = None
    for key, value in context.invocation_metadata() or ():
        if key == "user-agent" and isinstance(value, str):
            agent = value
    return Caller(address=peer_address(context.peer()), user_agent=agent)
