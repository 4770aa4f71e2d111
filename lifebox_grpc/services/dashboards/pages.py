"""DashboardService: quick-view pages (create, get, list, update, delete)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg

from lifebox.v1 import dashboards_pb2 as pb
from lifebox_grpc.alarms.reactions.owner import owner_principal
from lifebox_grpc.auth.permissions import COMMANDS_SEND
from lifebox_grpc.auth.principal import CLIENT, Principal, require_principal
from lifebox_grpc.errors import ErrorCollector, NotFound
from lifebox_grpc.services.common import (
    check_text,
    mask_paths,
    page_size,
    parse_uuid,
    require_uuid,
    scoped,
)
from lifebox_grpc.services.dashboards.access import PageAccess, PageRole, require_page
from lifebox_grpc.services.dashboards.base import DashboardRpcs, sees_device
from lifebox_grpc.services.dashboards.mapping import check_etag, page_pb
from lifebox_grpc.services.device_access import ASSIGNED_ONLY_ROLES
from lifebox_grpc.services.devices.paging import time_id_cursor, time_id_page
from lifebox_grpc.store import command_templates as template_store
from lifebox_grpc.store import dashboards_pages as store

MAX_PAGE_DEVICES = 100
MAX_PAGE_TEMPLATES = 50
UPDATABLE = frozenset({"title", "description", "device_ids", "command_template_ids"})


def _ids(errors: ErrorCollector, field: str, values: Sequence[str], most: int) -> list[uuid.UUID]:
    if len(values) > most:
        errors.add(field, f"at most {most}")
    ids: dict[uuid.UUID, None] = {}
    for i, value in enumerate(values[:most]):
        parsed = parse_uuid(errors, f"{field}[{i}]", value)
        if parsed in ids:
            errors.add(f"{field}[{i}]", "repeats an earlier one")
        elif parsed is not None:
            ids[parsed] = None
    return list(ids)


def _texts(errors: ErrorCollector, page: pb.QuickViewPage, paths: Sequence[str]) -> None:
    if "title" in paths:
        check_text(errors, "page.title", page.title, max_length=200)
    if "description" in paths:
        check_text(errors, "page.description", page.description, max_length=2000, required=False)


async def _check_links(
    conn: asyncpg.Connection,
    errors: ErrorCollector,
    caller: Principal,
    owner: Principal,
    client_id: uuid.UUID,
    devices: Sequence[uuid.UUID] | None,
    templates: Sequence[uuid.UUID] | None,
) -> None:
    """Devices the owner and the caller may see, templates the owner may send."""
    if devices:
        tenant = await store.tenant_devices(conn, client_id, devices)
        owner_sees, caller_sees = sees_device(owner), sees_device(caller)
        for i, d in enumerate(devices):
            if d not in tenant or not caller_sees(d):
                errors.add(f"page.device_ids[{i}]", "no such device")
            elif not owner_sees(d):
                errors.add(f"page.device_ids[{i}]", "the page's owner may not see this device")
    for i, t in enumerate(templates or ()):
        found = await template_store.template_with_permission(conn, client_id, t, None)
        field = f"page.command_template_ids[{i}]"
        if found is None:
            errors.add(field, "no such command template")
            continue
        template, permission = found
        if not template.enabled:
            errors.add(field, "the template is disabled")
        elif not owner.has(COMMANDS_SEND) or (
            permission.allowed_roles and owner.role not in permission.allowed_roles
        ):
            errors.add(field, "the page's owner may not send this template")
        elif owner.role in ASSIGNED_ONLY_ROLES and not await store.holds_any_grant(
            conn, owner.user_id, permission.code
        ):
            errors.add(field, f"the page's owner holds no live grant of {permission.code!r}")


async def load_page(
    conn: asyncpg.Connection, principal: Principal, page_id: uuid.UUID, **need: bool
) -> tuple[PageAccess, store.Page]:
    """The page and the caller's access (NOT_FOUND / PERMISSION_DENIED as require_page)."""
    access = await require_page(conn, principal, page_id, **need)
    page = await store.get_page(conn, page_id, principal.user_id, lock=any(need.values()))
    if page is None:
        raise NotFound("page not found")
    return access, page


class PageRpcs(DashboardRpcs):
    """Quick-view pages."""

    async def CreatePage(
        self, request: pb.CreatePageRequest, context: Any
    ) -> pb.CreatePageResponse:
        principal = require_principal()
        errors = ErrorCollector()
        page = request.page
        _texts(errors, page, ("title", "description"))
        devices = _ids(errors, "page.device_ids", page.device_ids, MAX_PAGE_DEVICES)
        templates = _ids(
            errors, "page.command_template_ids", page.command_template_ids, MAX_PAGE_TEMPLATES
        )
        if principal.client_id is None:
            errors.add("page", "platform staff have no tenant to own a page in")
        errors.raise_if_any()
        assert principal.client_id is not None
        async with scoped(self.pool, principal) as conn:
            await _check_links(
                conn, errors, principal, principal, principal.client_id, devices, templates
            )
            errors.raise_if_any()
            page_id = await store.create_page(
                conn, principal.client_id, principal.user_id, page.title, page.description
            )
            await store.set_devices(conn, principal.client_id, page_id, devices)
            await store.set_templates(conn, principal.client_id, page_id, templates)
            saved = await store.get_page(conn, page_id, principal.user_id)
        assert saved is not None
        return pb.CreatePageResponse(page=page_pb(saved, PageRole.OWNER, sees_device(principal)))

    async def GetPage(self, request: pb.GetPageRequest, context: Any) -> pb.GetPageResponse:
        principal = require_principal()
        page_id = require_uuid("page_id", request.page_id)
        async with scoped(self.pool, principal) as conn:
            access, page = await load_page(conn, principal, page_id)
        return pb.GetPageResponse(page=page_pb(page, access.role, sees_device(principal)))

    async def ListPages(self, request: pb.ListPagesRequest, context: Any) -> pb.ListPagesResponse:
        principal = require_principal()
        errors = ErrorCollector()
        size = page_size(errors, request.page_size)
        after = time_id_cursor(errors, request.page_token)
        errors.raise_if_any()
        every = principal.is_staff or principal.role == CLIENT
        client = None if principal.is_staff else principal.client_id
        async with scoped(self.pool, principal) as conn:
            rows = await store.list_pages(
                conn, principal.user_id, client, every=every, after=after, limit=size + 1
            )
        page, token = time_id_page(rows, size, lambda r: r.created_at)
        sees = sees_device(principal)
        return pb.ListPagesResponse(
            pages=[page_pb(p, _role(principal, p), sees) for p in page], next_page_token=token
        )

    async def UpdatePage(
        self, request: pb.UpdatePageRequest, context: Any
    ) -> pb.UpdatePageResponse:
        principal = require_principal()
        errors = ErrorCollector()
        page_id = parse_uuid(errors, "page.id", request.page.id)
        paths = mask_paths(errors, request.update_mask, UPDATABLE)
        _texts(errors, request.page, paths)
        devices = templates = None
        if "device_ids" in paths:
            devices = _ids(errors, "page.device_ids", request.page.device_ids, MAX_PAGE_DEVICES)
        if "command_template_ids" in paths:
            templates = _ids(
                errors, "page.command_template_ids", request.page.command_template_ids,
                MAX_PAGE_TEMPLATES,
            )  # fmt: skip
        errors.raise_if_any()
        async with scoped(self.pool, principal) as conn:
            access, page = await load_page(conn, principal, page_id, edit=True)
            check_etag(request.page.etag, page.version)
            owner = principal
            if page.owner_id != principal.user_id and (devices or templates):
                found = await owner_principal(conn, page.owner_id, page.client_id)
                if found is None:
                    raise NotFound("the page's owner is gone")
                owner = found
            await _check_links(conn, errors, principal, owner, page.client_id, devices, templates)
            errors.raise_if_any()
            texts: dict[str, Any] = {
                p: getattr(request.page, p) for p in ("title", "description") if p in paths
            }
            await store.update_page(conn, page.id, texts)
            if devices is not None:
                # Devices the caller may not see stay on the page, after the ones sent.
                sees = sees_device(principal)
                kept = [d for d in page.device_ids if not sees(d) and d not in devices]
                await store.set_devices(conn, page.client_id, page.id, [*devices, *kept])
            if templates is not None:
                await store.set_templates(conn, page.client_id, page.id, templates)
            saved = await store.get_page(conn, page.id, principal.user_id)
        assert saved is not None
        return pb.UpdatePageResponse(page=page_pb(saved, access.role, sees_device(principal)))

    async def DeletePage(
        self, request: pb.DeletePageRequest, context: Any
    ) -> pb.DeletePageResponse:
        principal = require_principal()
        page_id = require_uuid("page_id", request.page_id)
        async with scoped(self.pool, principal) as conn:
            _, page = await load_page(conn, principal, page_id, share=True)
            check_etag(request.etag, page.version)
            await store.delete_page(conn, page.id)
        return pb.DeletePageResponse()


def _role(principal: Principal, page: store.Page) -> PageRole:
    if page.owner_id == principal.user_id:
        return PageRole.OWNER
    if page.share == "edit":
        return PageRole.EDIT
    if page.share == "view":
        return PageRole.VIEW
    return PageRole.TENANT
