"""Who may see and change a quick-view page (DashboardService, and FileService for files
attached to a page).

A page is seen by its owner, by the users it is shared with (a live share: unexpired,
not revoked) and by whoever administers its tenant (a client administrator: the client's
pages; staff: every tenant's), read-only for the last. Anyone else reads it as NOT_FOUND.
Editing (title, devices, templates, widgets) takes the owner or an edit share, and the
role's ``dashboards.write``; sharing and deleting take the owner. A share never widens
device access: what a page shows is still cut to the devices the caller may see
(:mod:`lifebox_grpc.services.device_access`).
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass

import asyncpg

from lifebox_grpc.auth.permissions import DASHBOARDS_READ, DASHBOARDS_WRITE
from lifebox_grpc.auth.principal import CLIENT, Principal
from lifebox_grpc.errors import NotFound, PermissionDenied
from lifebox_grpc.store import dashboard_access as access_store

__all__ = ["DASHBOARDS_READ", "DASHBOARDS_WRITE", "PageAccess", "PageRole", "page_access"]


class PageRole(enum.Enum):
    """How the caller reaches a page, strongest first."""

    OWNER = "owner"
    EDIT = "edit"  # an edit share
    VIEW = "view"  # a view share
    TENANT = "tenant"  # a client administrator of the page's tenant, or staff: read-only


@dataclass(frozen=True)
class PageAccess:
    """The caller's access to one page."""

    page_id: uuid.UUID
    client_id: uuid.UUID
    owner_id: uuid.UUID
    role: PageRole
    # The role also holds dashboards.write (an edit share to a viewer edits nothing).
    writer: bool

    @property
    def may_edit(self) -> bool:
        return self.writer and self.role in (PageRole.OWNER, PageRole.EDIT)

    @property
    def may_share(self) -> bool:
        """Share, revoke and delete: the owner only."""
        return self.writer and self.role is PageRole.OWNER


async def page_access(
    conn: asyncpg.Connection, principal: Principal, page_id: uuid.UUID
) -> PageAccess | None:
    """The caller's access to the page, or None when it may not see it (no such page,
    another tenant's, not shared with it or the share expired). Callers check their own
    RPC's permission; this holds only the page-level rule."""
    client_id = None if principal.is_staff else principal.client_id
    if client_id is None and not principal.is_staff:
        return None
    grant = await access_store.page_grant(conn, page_id, principal.user_id, client_id)
    if grant is None:
        return None
    if grant.owner_id == principal.user_id:
        role = PageRole.OWNER
    elif grant.share == "edit":
        role = PageRole.EDIT
    elif grant.share == "view":
        role = PageRole.VIEW
    elif principal.is_staff or principal.role == CLIENT:
        role = PageRole.TENANT
    else:
        return None
    writer = principal.has(DASHBOARDS_WRITE)
    return PageAccess(grant.page_id, grant.client_id, grant.owner_id, role, writer)


async def require_page(
    conn: asyncpg.Connection,
    principal: Principal,
    page_id: uuid.UUID,
    *,
    edit: bool = False,
    share: bool = False,
) -> PageAccess:
    """The caller's access, NOT_FOUND when it may not see the page, PERMISSION_DENIED when
    it must ``edit`` (owner or edit share) or ``share`` (owner) and may not."""
    # Found first: another tenant's page is NOT_FOUND whatever the caller's permissions.
    access = await page_access(conn, principal, page_id)
    if access is None:
        raise NotFound("page not found")
    principal.require(DASHBOARDS_WRITE if edit or share else DASHBOARDS_READ)
    if share and not access.may_share:
        raise PermissionDenied("only the page's owner may share, revoke or delete it")
    if edit and not access.may_edit:
        raise PermissionDenied("editing this page takes its owner or an edit share")
    return access
