"""DashboardService: widgets of a page (create, get, list, update, delete)."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from lifebox.v1 import dashboards_pb2 as pb
from lifebox_grpc.auth.principal import Principal, require_principal
from lifebox_grpc.errors import ErrorCollector, FailedPrecondition, NotFound
from lifebox_grpc.services.common import (
    check_text,
    mask_paths,
    page_size,
    parse_uuid,
    require_uuid,
    scoped,
)
from lifebox_grpc.services.dashboards.base import DashboardRpcs, sees_device
from lifebox_grpc.services.dashboards.mapping import (
    TYPES,
    check_etag,
    config_dict,
    position_dict,
    widget_pb,
)
from lifebox_grpc.services.dashboards.pages import load_page
from lifebox_grpc.services.dashboards.widget_config import PageContext, check_config, check_position
from lifebox_grpc.services.devices.paging import time_id_cursor, time_id_page
from lifebox_grpc.store import dashboards_pages as page_store
from lifebox_grpc.store import dashboards_widgets as store

MAX_WIDGETS = 50
UPDATABLE = frozenset({"title", "config", "position"})


async def require_widget(
    conn: asyncpg.Connection, principal: Principal, widget_id: uuid.UUID, *, edit: bool = False
) -> tuple[store.Widget, page_store.Page]:
    """The widget and its page, seen (or edited) as the page is (NOT_FOUND otherwise)."""
    widget = await store.get_widget(conn, widget_id, lock=edit)
    if widget is None:
        raise NotFound("widget not found")
    try:
        _, page = await load_page(conn, principal, widget.page_id, edit=edit)
    except NotFound:
        raise NotFound("widget not found") from None
    return widget, page


def _context(page: page_store.Page, principal: Principal) -> PageContext:
    return PageContext(page.device_ids, page.template_ids, sees_device(principal))


class WidgetRpcs(DashboardRpcs):
    """Widgets."""

    async def CreateWidget(
        self, request: pb.CreateWidgetRequest, context: Any
    ) -> pb.CreateWidgetResponse:
        principal = require_principal()
        errors = ErrorCollector()
        w = request.widget
        page_id = parse_uuid(errors, "widget.page_id", w.page_id)
        check_text(errors, "widget.title", w.title, max_length=200, required=False)
        check_position(errors, "widget.position", w.position)
        errors.raise_if_any()
        async with scoped(self.pool, principal) as conn:
            _, page = await load_page(conn, principal, page_id, edit=True)
            check_config(errors, w, _context(page, principal))
            errors.raise_if_any()
            if await store.count_widgets(conn, page.id) >= MAX_WIDGETS:
                raise FailedPrecondition(f"a page holds at most {MAX_WIDGETS} widgets")
            saved = await store.create_widget(
                conn, page.client_id, page.id, TYPES[w.type][0], w.title, config_dict(w),
                position_dict(w.position),
            )  # fmt: skip
        return pb.CreateWidgetResponse(widget=widget_pb(saved))

    async def GetWidget(self, request: pb.GetWidgetRequest, context: Any) -> pb.GetWidgetResponse:
        principal = require_principal()
        widget_id = require_uuid("widget_id", request.widget_id)
        async with scoped(self.pool, principal) as conn:
            widget, _ = await require_widget(conn, principal, widget_id)
        return pb.GetWidgetResponse(widget=widget_pb(widget, sees_device(principal)))

    async def ListWidgets(
        self, request: pb.ListWidgetsRequest, context: Any
    ) -> pb.ListWidgetsResponse:
        principal = require_principal()
        errors = ErrorCollector()
        page_id = parse_uuid(errors, "page_id", request.page_id)
        size = page_size(errors, request.page_size)
        after = time_id_cursor(errors, request.page_token)
        errors.raise_if_any()
        async with scoped(self.pool, principal) as conn:
            await load_page(conn, principal, page_id)
            rows = await store.page_widgets(conn, page_id, after=after, limit=size + 1)
        page, token = time_id_page(rows, size, lambda r: r.created_at)
        return pb.ListWidgetsResponse(
            widgets=[widget_pb(w, sees_device(principal)) for w in page], next_page_token=token
        )

    async def UpdateWidget(
        self, request: pb.UpdateWidgetRequest, context: Any
    ) -> pb.UpdateWidgetResponse:
        principal = require_principal()
        errors = ErrorCollector()
        w = request.widget
        widget_id = parse_uuid(errors, "widget.id", w.id)
        paths = mask_paths(errors, request.update_mask, UPDATABLE)
        if "title" in paths:
            check_text(errors, "widget.title", w.title, max_length=200, required=False)
        if "position" in paths:
            check_position(errors, "widget.position", w.position)
        errors.raise_if_any()
        async with scoped(self.pool, principal) as conn:
            widget, page = await require_widget(conn, principal, widget_id, edit=True)
            check_etag(w.etag, widget.version)
            values: dict[str, Any] = {}
            if "config" in paths:
                typed = pb.Widget()
                typed.CopyFrom(w)
                typed.type = widget_pb(widget).type  # the type is fixed at creation
                check_config(errors, typed, _context(page, principal))
                values["config"] = config_dict(typed)
            errors.raise_if_any()
            if "title" in paths:
                values["title"] = w.title
            if "position" in paths:
                values["position"] = position_dict(w.position)
            saved = await store.update_widget(conn, widget.id, values)
        return pb.UpdateWidgetResponse(widget=widget_pb(saved))

    async def DeleteWidget(
        self, request: pb.DeleteWidgetRequest, context: Any
    ) -> pb.DeleteWidgetResponse:
        principal = require_principal()
        widget_id = require_uuid("widget_id", request.widget_id)
        async with scoped(self.pool, principal) as conn:
            widget, _ = await require_widget(conn, principal, widget_id, edit=True)
            check_etag(request.etag, widget.version)
            await store.delete_widget(conn, widget.id)
        return pb.DeleteWidgetResponse()
