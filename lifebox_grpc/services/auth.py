"""AuthService: validates requests, calls the sign-in flows and the user store, maps results.

Tenant rule: a principal naming a user (or client) outside their scope gets NOT_FOUND.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import asyncpg

from lifebox.v1 import auth_pb2, auth_pb2_grpc, common_pb2
from lifebox_grpc.auth import passwords
from lifebox_grpc.auth.permissions import CATALOGUE, ROLES_WRITE, USERS_WRITE
from lifebox_grpc.auth.principal import (
    ROLE_RANK,
    STAFF_ROLES,
    SUPER_USER,
    Principal,
    current_principal,
    require_principal,
)
from lifebox_grpc.auth.sessions import AuthFlows, Session
from lifebox_grpc.errors import (
    ErrorCollector,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from lifebox_grpc.services.common import (
    caller_of,
    check_email,
    check_text,
    decode_page_token,
    encode_page_token,
    mask_paths,
    page_size,
    parse_uuid,
    require_uuid,
    scoped,
    timestamp,
)
from lifebox_grpc.store import users as user_store
from lifebox_grpc.store.scope import Scope, scoped_transaction

MAX_DISPLAY_NAME = 200
MAX_SECRET_FIELD = 4096  # tokens and passwords: anything longer is not ours
_PERMISSION_NAME = re.compile(r"^[a-z_]+(\.[a-z_]+)+$")
USER_MASK_PATHS = ("email", "display_name", "role", "status")

_STATUS_TO_PB = {
    "active": auth_pb2.USER_STATUS_ACTIVE,
    "disabled": auth_pb2.USER_STATUS_DISABLED,
}
_STATUS_FROM_PB = {v: k for k, v in _STATUS_TO_PB.items()}


def role_name(value: int) -> str | None:
    """``ROLE_SUPER_USER`` → ``super_user``; None for unspecified or unknown values."""
    if value == common_pb2.ROLE_UNSPECIFIED or value not in common_pb2.Role.values():
        return None
    return common_pb2.Role.Name(common_pb2.Role.ValueType(value)).removeprefix("ROLE_").lower()


def role_value(name: str) -> int:
    try:
        return int(common_pb2.Role.Value("ROLE_" + name.upper()))
    except ValueError:
        return common_pb2.ROLE_UNSPECIFIED


def user_pb(user: user_store.User) -> auth_pb2.User:
    return auth_pb2.User(
        id=str(user.id),
        email=user.email,
        display_name=user.display_name or "",
        role=role_value(user.role),  # type: ignore[arg-type]
        client_id=str(user.client_id) if user.client_id else "",
        status=_STATUS_TO_PB.get(user.status, auth_pb2.USER_STATUS_UNSPECIFIED),
        locked_until=timestamp(user.locked_until),
        last_login_time=timestamp(user.last_login_at),
        create_time=timestamp(user.created_at),
        update_time=timestamp(user.updated_at),
    )


def tokens_pb(session: Session) -> auth_pb2.TokenPair:
    return auth_pb2.TokenPair(
        access_token=session.access.token,
        access_token_expire_time=timestamp(session.access.expires_at),
        refresh_token=session.refresh.token,
        refresh_token_expire_time=timestamp(session.refresh.expires_at),
        token_type="Bearer",  # noqa: S106 - the scheme name, not a secret
    )


def _check_secret(errors: ErrorCollector, field: str, value: str) -> None:
    if not value:
        errors.add(field, "required")
    elif len(value) > MAX_SECRET_FIELD:
        errors.add(field, f"must be at most {MAX_SECRET_FIELD} characters")


def _may_manage(principal: Principal, role: str) -> bool:
    """Nobody manages a user whose role ranks above their own."""
    return ROLE_RANK.get(role, 1000) <= ROLE_RANK.get(principal.role, 0)


class AuthServicer(auth_pb2_grpc.AuthServiceServicer):
    """The AuthService handlers."""

    def __init__(self, pool: asyncpg.Pool, flows: AuthFlows) -> None:
        self.pool = pool
        self.flows = flows

    # -- sessions -------------------------------------------------------------------------

    async def Login(self, request: auth_pb2.LoginRequest, context: Any) -> auth_pb2.LoginResponse:
        errors = ErrorCollector()
        check_email(errors, "email", request.email)
        _check_secret(errors, "password", request.password)
        errors.raise_if_any()
        session = await self.flows.login(request.email, request.password, caller_of(context))
        return auth_pb2.LoginResponse(tokens=tokens_pb(session), user=user_pb(session.user))

    async def RefreshToken(
        self, request: auth_pb2.RefreshTokenRequest, context: Any
    ) -> auth_pb2.RefreshTokenResponse:
        errors = ErrorCollector()
        _check_secret(errors, "refresh_token", request.refresh_token)
        errors.raise_if_any()
        session = await self.flows.refresh(request.refresh_token, caller_of(context))
        return auth_pb2.RefreshTokenResponse(tokens=tokens_pb(session))

    async def Logout(
        self, request: auth_pb2.LogoutRequest, context: Any
    ) -> auth_pb2.LogoutResponse:
        if len(request.refresh_token) > MAX_SECRET_FIELD:
            raise InvalidArgument.field("refresh_token", "too long")
        await self.flows.logout(
            request.refresh_token or None, current_principal(), request.all_sessions
        )
        return auth_pb2.LogoutResponse()

    async def RequestPasswordReset(
        self, request: auth_pb2.RequestPasswordResetRequest, context: Any
    ) -> auth_pb2.RequestPasswordResetResponse:
        errors = ErrorCollector()
        check_email(errors, "email", request.email)
        errors.raise_if_any()
        await self.flows.request_password_reset(request.email, caller_of(context))
        return auth_pb2.RequestPasswordResetResponse()

    async def ResetPassword(
        self, request: auth_pb2.ResetPasswordRequest, context: Any
    ) -> auth_pb2.ResetPasswordResponse:
        errors = ErrorCollector()
        _check_secret(errors, "reset_token", request.reset_token)
        _check_secret(errors, "new_password", request.new_password)
        errors.raise_if_any()
        await self.flows.reset_password(
            request.reset_token, request.new_password, caller_of(context)
        )
        return auth_pb2.ResetPasswordResponse()

    async def ChangePassword(
        self, request: auth_pb2.ChangePasswordRequest, context: Any
    ) -> auth_pb2.ChangePasswordResponse:
        principal = require_principal()
        errors = ErrorCollector()
        _check_secret(errors, "current_password", request.current_password)
        _check_secret(errors, "new_password", request.new_password)
        errors.raise_if_any()
        await self.flows.change_password(
            principal, request.current_password, request.new_password, caller_of(context)
        )
        return auth_pb2.ChangePasswordResponse()

    async def GetMe(self, request: auth_pb2.GetMeRequest, context: Any) -> auth_pb2.GetMeResponse:
        principal = require_principal()
        async with self.pool.acquire() as conn:  # one statement that scopes itself
            user = await user_store.get_user(
                conn, principal.user_id, principal.client_id, staff=principal.is_staff
            )
        if user is None:
            raise NotFound("user not found")
        return auth_pb2.GetMeResponse(
            user=user_pb(user),
            permissions=sorted(principal.permissions),
            assigned_device_ids=[str(d) for d in principal.assigned_device_ids],
        )

    # -- users ----------------------------------------------------------------------------

    def _target_client(
        self, principal: Principal, role: str, client_id: uuid.UUID | None
    ) -> uuid.UUID | None:
        """The client a new user joins, as the principal may ask for it."""
        if not principal.is_staff:
            if client_id is not None and client_id != principal.client_id:
                raise NotFound("client not found")
            if role in STAFF_ROLES:
                raise InvalidArgument.field("user.role", "platform staff roles belong to no client")
            return principal.client_id
        if role in STAFF_ROLES:
            if client_id is not None:
                raise InvalidArgument.field("user.client_id", "must be empty for staff roles")
            return None
        if client_id is None:
            raise InvalidArgument.field("user.client_id", "required for this role")
        return client_id

    async def CreateUser(
        self, request: auth_pb2.CreateUserRequest, context: Any
    ) -> auth_pb2.CreateUserResponse:
        principal = require_principal()
        errors = ErrorCollector()
        user = request.user
        check_email(errors, "user.email", user.email)
        check_text(
            errors,
            "user.display_name",
            user.display_name,
            max_length=MAX_DISPLAY_NAME,
            required=False,
        )
        role = role_name(user.role)
        if role is None:
            errors.add("user.role", "required")
        client_id = parse_uuid(errors, "user.client_id", user.client_id, required=False)
        _check_secret(errors, "password", request.password)
        errors.raise_if_any()
        assert role is not None
        self.flows.check_password_policy("password", request.password, user.email)
        target_client = self._target_client(principal, role, client_id)
        if not _may_manage(principal, role):
            raise PermissionDenied("you cannot create a user with a role above your own")
        password_hash = await passwords.hash_in_thread(request.password)
        async with scoped(self.pool, principal) as conn:
            created = await user_store.create_user(
                conn,
                client_id=target_client,
                email=user.email,
                password_hash=password_hash,
                role=role,
                display_name=user.display_name or None,
            )
        return auth_pb2.CreateUserResponse(user=user_pb(created))

    async def _visible_user(
        self, conn: asyncpg.Connection, principal: Principal, user_id: uuid.UUID
    ) -> user_store.User:
        found = await user_store.get_user(conn, user_id, principal.client_id)
        if found is None:
            raise NotFound("user not found")
        return found

    async def GetUser(
        self, request: auth_pb2.GetUserRequest, context: Any
    ) -> auth_pb2.GetUserResponse:
        principal = require_principal()
        user_id = require_uuid("id", request.id)
        async with scoped(self.pool, principal) as conn:
            user = await self._visible_user(conn, principal, user_id)
        return auth_pb2.GetUserResponse(user=user_pb(user))

    async def ListUsers(
        self, request: auth_pb2.ListUsersRequest, context: Any
    ) -> auth_pb2.ListUsersResponse:
        principal = require_principal()
        errors = ErrorCollector()
        size = page_size(errors, request.page_size)
        key = decode_page_token(errors, request.page_token, 2)
        client_id = parse_uuid(errors, "client_id", request.client_id, required=False)
        after = None
        if key is not None:
            try:
                after = (key[0], uuid.UUID(key[1]))
            except ValueError:
                errors.add("page_token", "is not a token this API returned")
        errors.raise_if_any()
        client_filter = principal.client_id
        if client_id is not None:
            if not principal.is_staff and client_id != principal.client_id:
                raise NotFound("client not found")
            client_filter = client_id
        async with scoped(self.pool, principal) as conn:
            users = await user_store.list_users(conn, client_filter, after=after, limit=size + 1)
        page, more = users[:size], len(users) > size
        token = encode_page_token([page[-1].email.lower(), str(page[-1].id)]) if more else ""
        return auth_pb2.ListUsersResponse(users=[user_pb(u) for u in page], next_page_token=token)

    async def UpdateUser(
        self, request: auth_pb2.UpdateUserRequest, context: Any
    ) -> auth_pb2.UpdateUserResponse:
        principal = require_principal()
        errors = ErrorCollector()
        user_id = parse_uuid(errors, "user.id", request.user.id)
        paths = mask_paths(errors, request.update_mask, USER_MASK_PATHS)
        changes: dict[str, object] = {}
        new = request.user
        if "email" in paths:
            check_email(errors, "user.email", new.email)
            changes["email"] = new.email
        if "display_name" in paths:
            check_text(
                errors,
                "user.display_name",
                new.display_name,
                max_length=MAX_DISPLAY_NAME,
                required=False,
            )
            changes["display_name"] = new.display_name or None
        if "role" in paths:
            role = role_name(new.role)
            if role is None:
                errors.add("user.role", "required")
            changes["role"] = role
        if "status" in paths:
            status = _STATUS_FROM_PB.get(new.status)
            if status is None:
                errors.add("user.status", "must be USER_STATUS_ACTIVE or USER_STATUS_DISABLED")
            changes["status"] = status
        errors.raise_if_any()
        async with scoped(self.pool, principal) as conn:
            target = await self._visible_user(conn, principal, user_id)
            principal.require(USERS_WRITE)
            self._check_user_change(principal, target, changes)
            if (
                target.role == SUPER_USER
                and (
                    changes.get("role", SUPER_USER) != SUPER_USER
                    or changes.get("status", "active") != "active"
                )
                and await user_store.count_active_super_users(conn) <= 1
            ):
                raise FailedPrecondition("the last active super user must stay one")
            updated = await user_store.update_user(conn, target.id, principal.client_id, changes)
        if updated is None:
            raise NotFound("user not found")
        return auth_pb2.UpdateUserResponse(user=user_pb(updated))

    @staticmethod
    def _check_user_change(
        principal: Principal, target: user_store.User, changes: dict[str, object]
    ) -> None:
        if not _may_manage(principal, target.role):
            raise PermissionDenied("you cannot change a user whose role is above your own")
        role = changes.get("role")
        if isinstance(role, str) and role != target.role:
            if target.id == principal.user_id:
                raise PermissionDenied("you cannot change your own role")
            if not _may_manage(principal, role):
                raise PermissionDenied("you cannot grant a role above your own")
            if (role in STAFF_ROLES) != (target.client_id is None):
                raise InvalidArgument.field(
                    "user.role", "cannot move a user between platform staff and a client"
                )
        if target.id == principal.user_id and changes.get("status", "active") != "active":
            raise FailedPrecondition("you cannot disable your own account")

    async def DeleteUser(
        self, request: auth_pb2.DeleteUserRequest, context: Any
    ) -> auth_pb2.DeleteUserResponse:
        principal = require_principal()
        user_id = require_uuid("id", request.id)
        async with scoped(self.pool, principal) as conn:
            target = await self._visible_user(conn, principal, user_id)
            principal.require(USERS_WRITE)
            if target.id == principal.user_id:
                raise FailedPrecondition("you cannot delete your own account")
            if not _may_manage(principal, target.role):
                raise PermissionDenied("you cannot delete a user whose role is above your own")
            if target.role == SUPER_USER and await user_store.count_active_super_users(conn) <= 1:
                raise FailedPrecondition("the last active super user cannot be deleted")
            if not await user_store.delete_user(conn, target.id, principal.client_id):
                raise NotFound("user not found")
        return auth_pb2.DeleteUserResponse()

    # -- roles ----------------------------------------------------------------------------

    @staticmethod
    def _role_pb(role: user_store.RoleRecord) -> auth_pb2.RoleInfo:
        return auth_pb2.RoleInfo(
            role=role_value(role.name),  # type: ignore[arg-type]
            name=role.name,
            description=role.description,
            permissions=list(role.permissions),
        )

    async def ListRoles(
        self, request: auth_pb2.ListRolesRequest, context: Any
    ) -> auth_pb2.ListRolesResponse:
        principal = require_principal()
        async with scoped(self.pool, principal) as conn:
            roles = await user_store.list_roles(conn)
        return auth_pb2.ListRolesResponse(roles=[self._role_pb(r) for r in roles])

    async def _known_permissions(self, conn: asyncpg.Connection) -> dict[str, str]:
        """The code's catalogue plus every permission seeded for any role."""
        known = dict(CATALOGUE)
        for role in await user_store.list_roles(conn):
            for permission in role.permissions:
                known.setdefault(permission, "")
        return known

    async def ListPermissions(
        self, request: auth_pb2.ListPermissionsRequest, context: Any
    ) -> auth_pb2.ListPermissionsResponse:
        principal = require_principal()
        async with scoped(self.pool, principal) as conn:
            known = await self._known_permissions(conn)
        return auth_pb2.ListPermissionsResponse(
            permissions=[
                auth_pb2.Permission(name=name, description=known[name]) for name in sorted(known)
            ]
        )

    async def UpdateRolePermissions(
        self, request: auth_pb2.UpdateRolePermissionsRequest, context: Any
    ) -> auth_pb2.UpdateRolePermissionsResponse:
        principal = require_principal()
        if principal.role != SUPER_USER:
            raise PermissionDenied("only a super user changes role permissions")
        errors = ErrorCollector()
        role = role_name(request.role)
        if role is None:
            errors.add("role", "required")
        wanted = list(dict.fromkeys(request.permissions))
        for i, permission in enumerate(wanted):
            if not _PERMISSION_NAME.match(permission) or len(permission) > 100:
                errors.add(f"permissions[{i}]", "must look like 'area.action'")
        errors.raise_if_any()
        assert role is not None
        async with self.pool.acquire() as conn, scoped_transaction(conn, Scope.staff()):
            known = await self._known_permissions(conn)
            for i, permission in enumerate(wanted):
                if permission not in known:
                    errors.add(f"permissions[{i}]", f"unknown permission {permission!r}")
            errors.raise_if_any()
            if role == SUPER_USER and ROLES_WRITE not in wanted:
                raise FailedPrecondition(f"super_user must keep {ROLES_WRITE!r}")
            await user_store.replace_role_permissions(conn, role, wanted)
            updated = next(r for r in await user_store.list_roles(conn) if r.name == role)
        return auth_pb2.UpdateRolePermissionsResponse(role=self._role_pb(updated))
