"""DashboardService: the caller's own arrangement of a page (positions by widget id)."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format

from lifebox.v1 import dashboards_pb2 as pb
from lifebox_grpc.auth.principal import require_principal
from lifebox_grpc.errors import ErrorCollector, FailedPrecondition, NotFound
from lifebox_grpc.services.common import parse_uuid, require_uuid, scoped
from lifebox_grpc.services.dashboards.base import DashboardRpcs
from lifebox_grpc.services.dashboards.mapping import check_etag, layout_pb, position_dict
from lifebox_grpc.services.dashboards.pages import load_page
from lifebox_grpc.services.dashboards.widget_config import check_position
from lifebox_grpc.store import dashboards_layouts as store
from lifebox_grpc.store import dashboards_widgets as widget_store


class LayoutRpcs(DashboardRpcs):
    """Per-user layouts of pages."""

    async def GetPageLayout(
        self, request: pb.GetPageLayoutRequest, context: Any
    ) -> pb.GetPageLayoutResponse:
        principal = require_principal()
        page_id = require_uuid("page_id", request.page_id)
        async with scoped(self.pool, principal) as conn:
            await load_page(conn, principal, page_id)
            layout = await store.get_layout(conn, principal.user_id, page_id)
            if layout is not None:
                return pb.GetPageLayoutResponse(layout=layout_pb(layout))
            widgets = await widget_store.page_widgets(conn, page_id)
        default = pb.PageLayout(
            page_id=str(page_id), user_id=str(principal.user_id), is_default=True
        )
        for w in widgets:
            json_format.ParseDict(w.position, default.positions[str(w.id)])
        return pb.GetPageLayoutResponse(layout=default)

    async def UpdatePageLayout(
        self, request: pb.UpdatePageLayoutRequest, context: Any
    ) -> pb.UpdatePageLayoutResponse:
        principal = require_principal()
        errors = ErrorCollector()
        layout = request.layout
        page_id = parse_uuid(errors, "layout.page_id", layout.page_id)
        for key in sorted(layout.positions):
            check_position(errors, f"layout.positions[{key}]", layout.positions[key])
        errors.raise_if_any()
        async with scoped(self.pool, principal) as conn:
            _, page = await load_page(conn, principal, page_id)
            if principal.client_id != page.client_id:
                # A layout is a row of the page's tenant, for a user of it (0008's key).
                raise FailedPrecondition("platform staff keep no layouts of a tenant's pages")
            current = await store.get_layout(conn, principal.user_id, page_id, lock=True)
            if layout.etag:
                if current is None:
                    check_etag(layout.etag, 0)
                else:
                    check_etag(layout.etag, current.version)
            widgets = {str(w.id) for w in await widget_store.page_widgets(conn, page_id)}
            for key in sorted(layout.positions):
                if key not in widgets:
                    errors.add(f"layout.positions[{key}]", "not a widget of the page")
            errors.raise_if_any()
            positions = {k: position_dict(v) for k, v in layout.positions.items()}
            saved = await store.put_layout(
                conn, page.client_id, principal.user_id, page_id, positions
            )
        return pb.UpdatePageLayoutResponse(layout=layout_pb(saved))

    async def DeletePageLayout(
        self, request: pb.DeletePageLayoutRequest, context: Any
    ) -> pb.DeletePageLayoutResponse:
        principal = require_principal()
        page_id = require_uuid("page_id", request.page_id)
        async with scoped(self.pool, principal) as conn:
            await load_page(conn, principal, page_id)
            current = await store.get_layout(conn, principal.user_id, page_id, lock=True)
            if current is None:
                raise NotFound("you have no layout of this page")
            check_etag(request.etag, current.version)
            await store.delete_layout(conn, principal.user_id, page_id)
        return pb.DeletePageLayoutResponse()
