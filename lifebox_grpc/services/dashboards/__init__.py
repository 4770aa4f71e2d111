"""DashboardService (issue 17): quick-view pages, shares, widgets, layouts, page data, one
module per resource. Validation and mapping only; the SQL is in the stores
(store/dashboards_*.py, store/dashboard_access.py) and, for page data, TelemetryService's
own queries (store/telemetry.py)."""

from __future__ import annotations

from lifebox_grpc.services.dashboards.layouts import LayoutRpcs
from lifebox_grpc.services.dashboards.page_data import PageDataRpcs
from lifebox_grpc.services.dashboards.pages import PageRpcs
from lifebox_grpc.services.dashboards.shares import ShareRpcs
from lifebox_grpc.services.dashboards.widgets import WidgetRpcs

__all__ = ["DashboardServicer"]


class DashboardServicer(PageRpcs, ShareRpcs, WidgetRpcs, LayoutRpcs, PageDataRpcs):
    """The DashboardService handlers."""
