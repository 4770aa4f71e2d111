"""DashboardService: stored rows to messages, widget types to stored kinds, and etags."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from google.protobuf import json_format

from lifebox.v1 import dashboards_pb2 as pb
from lifebox_grpc.errors import Aborted
from lifebox_grpc.services.common import timestamp
from lifebox_grpc.services.dashboards.access import PageRole
from lifebox_grpc.store.dashboards_layouts import Layout
from lifebox_grpc.store.dashboards_pages import Page
from lifebox_grpc.store.dashboards_shares import Share
from lifebox_grpc.store.dashboards_widgets import Widget

# Widget type -> (stored kind of 0008's check, the oneof field holding its config).
TYPES: dict[int, tuple[str, str]] = {
    pb.WIDGET_TYPE_TIME_SERIES: ("chart", "time_series"),
    pb.WIDGET_TYPE_GAUGE: ("gauge", "gauge"),
    pb.WIDGET_TYPE_STAT: ("stat", "stat"),
    pb.WIDGET_TYPE_TABLE: ("table", "table"),
    pb.WIDGET_TYPE_MAP: ("map", "map"),
    pb.WIDGET_TYPE_COMMAND_BUTTON: ("command_button", "command_button"),
    pb.WIDGET_TYPE_TEXT: ("text", "text"),
    pb.WIDGET_TYPE_ALARM_LIST: ("alarm_list", "alarm_list"),
}
TYPE_OF_KIND = {kind: t for t, (kind, _) in TYPES.items()}
_ROLE_PB = {
    PageRole.OWNER: pb.PAGE_ROLE_OWNER,
    PageRole.EDIT: pb.PAGE_ROLE_EDIT,
    PageRole.VIEW: pb.PAGE_ROLE_VIEW,
    PageRole.TENANT: pb.PAGE_ROLE_TENANT,
}
SHARE_PERMISSIONS = {pb.SHARE_PERMISSION_VIEW: "view", pb.SHARE_PERMISSION_EDIT: "edit"}
_SHARE_PB = {v: k for k, v in SHARE_PERMISSIONS.items()}


def etag_of(version: int) -> str:
    """The AIP-154 etag of a row: its version counter (0093), quoted as HTTP etags are."""
    return f'"{version}"'


def check_etag(sent: str, version: int) -> None:
    """ABORTED when ``sent`` is set and is not the row's current etag."""
    if sent and sent != etag_of(version):
        raise Aborted(
            "the resource changed since you read it: read it again and retry",
            metadata={"etag": etag_of(version)},
        )


def page_pb(page: Page, role: PageRole, visible: Any) -> pb.QuickViewPage:
    """``visible`` says which of the page's devices the caller may see (only they are
    listed: a share never shows devices the caller may not see)."""
    return pb.QuickViewPage(
        id=str(page.id),
        client_id=str(page.client_id),
        owner_id=str(page.owner_id),
        title=page.title,
        description=page.description,
        device_ids=[str(d) for d in page.device_ids if visible(d)],
        command_template_ids=[str(t) for t in page.template_ids],
        etag=etag_of(page.version),
        caller_role=_ROLE_PB[role],
        create_time=timestamp(page.created_at),
        update_time=timestamp(page.updated_at),
    )


def widget_pb(widget: Widget, visible: Callable[[uuid.UUID], bool] | None = None) -> pb.Widget:
    """The widget; with ``visible``, its config names only the devices the caller may see
    (a share never shows devices the caller may not see)."""
    out = pb.Widget(
        id=str(widget.id),
        page_id=str(widget.page_id),
        type=TYPE_OF_KIND[widget.kind],  # type: ignore[arg-type]
        title=widget.title,
        etag=etag_of(widget.version),
        create_time=timestamp(widget.created_at),
        update_time=timestamp(widget.updated_at),
    )
    _, field = TYPES[out.type]
    json_format.ParseDict(widget.config, getattr(out, field))
    json_format.ParseDict(widget.position, out.position)
    if visible is not None:
        _cut_devices(getattr(out, field), visible)
    return out


def _cut_devices(config: Any, visible: Callable[[uuid.UUID], bool]) -> None:
    if hasattr(config, "device_ids"):
        shown = [d for d in config.device_ids if visible(uuid.UUID(d))]
        del config.device_ids[:]
        config.device_ids.extend(shown)
    elif getattr(config, "device_id", "") and not visible(uuid.UUID(config.device_id)):
        config.device_id = ""


def config_dict(widget: pb.Widget) -> dict[str, Any]:
    """The widget's config as the JSON object stored."""
    _, field = TYPES[widget.type]
    return json_format.MessageToDict(getattr(widget, field), preserving_proto_field_name=True)


def position_dict(position: pb.WidgetPosition) -> dict[str, Any]:
    return json_format.MessageToDict(position, preserving_proto_field_name=True)


def share_pb(share: Share) -> pb.PageShare:
    return pb.PageShare(
        id=str(share.id),
        page_id=str(share.page_id),
        user_id=str(share.user_id),
        permission=_SHARE_PB[share.permission],
        expire_time=timestamp(share.expires_at),
        expired=share.expired,
        shared_by=str(share.shared_by) if share.shared_by else "",
        share_time=timestamp(share.shared_at),
    )


def layout_pb(layout: Layout) -> pb.PageLayout:
    out = pb.PageLayout(
        page_id=str(layout.page_id),
        user_id=str(layout.user_id),
        etag=etag_of(layout.version),
        update_time=timestamp(layout.updated_at),
    )
    for widget_id, position in layout.positions.items():
        json_format.ParseDict(position, out.positions[widget_id])
    return out
