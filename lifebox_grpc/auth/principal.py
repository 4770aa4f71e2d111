"""Who is calling: the Principal every handler receives, and how a handler gets it."""

from __future__ import annotations

import uuid
from contextvars import ContextVar
from dataclasses import dataclass

from lifebox_grpc.errors import PermissionDenied, Unauthenticated

SUPER_USER = "super_user"
ADMIN = "admin"
CLIENT = "client"
OPERATOR = "operator"
VIEWER = "viewer"

ROLE_NAMES = (SUPER_USER, ADMIN, CLIENT, OPERATOR, VIEWER)
STAFF_ROLES = frozenset({SUPER_USER, ADMIN})
# Higher rank may manage lower rank; nobody may grant a rank above their own.
ROLE_RANK = {SUPER_USER: 50, ADMIN: 40, CLIENT: 30, OPERATOR: 20, VIEWER: 10}


@dataclass(frozen=True)
class Principal:
    """An authenticated user as the database knows them right now (not as the token said).

    ``client_id`` is None exactly for platform staff, who act across tenants only through
    the separately named staff path (:attr:`is_staff`).
    """

    user_id: uuid.UUID
    email: str
    role: str
    client_id: uuid.UUID | None
    permissions: frozenset[str]
    assigned_device_ids: tuple[uuid.UUID, ...] = ()
    # The sign-in session (refresh token family) the access token came from.
    session_family: uuid.UUID | None = None

    @property
    def is_staff(self) -> bool:
        return self.role in STAFF_ROLES and self.client_id is None

    def has(self, permission: str) -> bool:
        return permission in self.permissions

    def require(self, permission: str) -> None:
        """Raise PermissionDenied unless the principal holds ``permission``."""
        if permission not in self.permissions:
            raise PermissionDenied(f"this needs the {permission!r} permission")

    def describe(self) -> str:
        """A log-safe one-word identity: ``user-id/role``."""
        return f"{self.user_id}/{self.role}"


_current: ContextVar[Principal | None] = ContextVar("lifebox_principal", default=None)


def set_current_principal(principal: Principal | None) -> None:
    """Called by the authentication interceptor for the duration of one call."""
    _current.set(principal)


def current_principal() -> Principal | None:
    """The caller, or None on a public method called without a token."""
    return _current.get()


def require_principal() -> Principal:
    """The caller; Unauthenticated when the call carries no valid access token."""
    principal = _current.get()
    if principal is None:
        raise Unauthenticated("this method needs `authorization: Bearer <access token>`")
    return principal
