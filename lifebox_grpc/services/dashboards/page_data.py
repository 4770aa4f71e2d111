"""DashboardService.GetPageData: every widget's data in one call.

One statement per kind of data across all widgets, not one per widget: the latest readings
of every device any GAUGE, TABLE or MAP widget shows (all their fields at once), the
buckets of TIME_SERIES widgets (one statement per distinct bucket width), the range
aggregates of STAT widgets, and the open alarms of ALARM_LIST widgets. Each widget's part
is then cut out of those rows and built by TelemetryService's own mapping, so it equals
what the TelemetryService call for that widget returns. Every widget's devices are cut to
those the caller may see (a share never widens device access).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from lifebox.v1 import dashboards_pb2 as pb
from lifebox_grpc.auth.permissions import TELEMETRY_READ
from lifebox_grpc.auth.principal import Principal, require_principal
from lifebox_grpc.errors import ErrorCollector
from lifebox_grpc.services.common import parse_uuid, require_work_within, scoped
from lifebox_grpc.services.dashboards.base import DashboardRpcs, sees_device
from lifebox_grpc.services.dashboards.mapping import widget_pb
from lifebox_grpc.services.dashboards.pages import load_page
from lifebox_grpc.services.device_access import device_filter
from lifebox_grpc.services.telemetry import _column, series_of
from lifebox_grpc.services.telemetry_requests import FUNCTION_FROM_PB, bucket_count, parse_range
from lifebox_grpc.store import dashboards_data as data_store
from lifebox_grpc.store import dashboards_widgets as widget_store
from lifebox_grpc.store import partitions
from lifebox_grpc.store import telemetry as telemetry_store

_MAP_FIELDS = ("latitude", "longitude")
_LATEST = (pb.WIDGET_TYPE_GAUGE, pb.WIDGET_TYPE_TABLE, pb.WIDGET_TYPE_MAP)


def _devices(widget: pb.Widget) -> list[uuid.UUID]:
    config = getattr(widget, widget.WhichOneof("config") or "text")
    if widget.type == pb.WIDGET_TYPE_GAUGE:
        return [uuid.UUID(widget.gauge.device_id)]
    ids = getattr(config, "device_ids", ())
    return [uuid.UUID(d) for d in ids]


def _latest_fields(widget: pb.Widget) -> list[str]:
    if widget.type == pb.WIDGET_TYPE_GAUGE:
        return [widget.gauge.field]
    if widget.type == pb.WIDGET_TYPE_TABLE:
        return list(dict.fromkeys(widget.table.fields))
    return list(_MAP_FIELDS)


def _aggregates(aggregations: Sequence[Any]) -> list[telemetry_store.Aggregate]:
    return [telemetry_store.Aggregate(a.field, FUNCTION_FROM_PB[a.function]) for a in aggregations]


class _Plan:
    """Which devices and fields each kind of statement reads, and each widget's share."""

    def __init__(self, widgets: list[pb.Widget], visible: Callable[[uuid.UUID], bool]) -> None:
        self.widgets = widgets
        self.devices: dict[str, list[uuid.UUID]] = {}
        self.hidden: dict[str, int] = {}
        self.latest_devices: dict[uuid.UUID, None] = {}
        self.latest_fields: dict[str, None] = {}
        self.series: dict[timedelta, tuple[dict[uuid.UUID, None], dict[Any, None]]] = {}
        self.stat_devices: dict[uuid.UUID, None] = {}
        self.stat_aggregates: dict[telemetry_store.Aggregate, None] = {}
        self.alarm_devices: dict[uuid.UUID, None] = {}
        for w in widgets:
            wanted = (
                _devices(w)
                if w.type not in (pb.WIDGET_TYPE_TEXT, pb.WIDGET_TYPE_COMMAND_BUTTON)
                else []
            )
            shown = [d for d in wanted if visible(d)]
            self.devices[w.id], self.hidden[w.id] = shown, len(wanted) - len(shown)
            if w.type in _LATEST:
                self.latest_devices.update(dict.fromkeys(shown))
                self.latest_fields.update(dict.fromkeys(_latest_fields(w)))
            elif w.type == pb.WIDGET_TYPE_TIME_SERIES:
                width = w.time_series.bucket_width.ToTimedelta()
                devices, aggs = self.series.setdefault(width, ({}, {}))
                devices.update(dict.fromkeys(shown))
                aggs.update(dict.fromkeys(_aggregates(w.time_series.aggregations)))
            elif w.type == pb.WIDGET_TYPE_STAT:
                self.stat_devices.update(dict.fromkeys(shown))
                self.stat_aggregates.update(dict.fromkeys(_aggregates([w.stat.aggregation])))
            elif w.type == pb.WIDGET_TYPE_ALARM_LIST:
                self.alarm_devices.update(dict.fromkeys(shown))

    def cells(self, start: datetime, end: datetime) -> int:
        """Values the call computes, for the one cap on a call's work."""
        total = len(self.latest_devices) * len(self.latest_fields)
        for width, (devices, aggs) in self.series.items():
            total += len(devices) * len(aggs) * bucket_count(start, end, width)
        return total + len(self.stat_devices) * len(self.stat_aggregates)


def _latest_part(
    rows: dict[uuid.UUID, asyncpg.Record], fields: list[str], index: dict[str, int],
    devices: list[uuid.UUID],
) -> pb.LatestValues:  # fmt: skip
    """GetLatestTelemetryResponse's shape for ``devices`` and ``fields``."""
    found = [rows[d] for d in devices if d in rows and rows[d][1] is not None]
    return pb.LatestValues(
        device_ids=[str(r[0]) for r in found],
        time_micros=[r[1] for r in found],
        columns=[
            _column(f, telemetry_store.FIELD_KINDS[f], [r[3 + index[f]] for r in found])
            for f in fields
        ],
    )


def _series_part(
    rows: list[asyncpg.Record],
    aggregates: list[telemetry_store.Aggregate],
    index: dict[telemetry_store.Aggregate, int],
    devices: list[uuid.UUID],
) -> pb.SeriesValues:
    """AggregateTelemetryResponse's shape: the rows of ``devices``, the wanted columns."""
    wanted = set(devices)
    picked = [(r[0], r[1], *(r[2 + index[a]] for a in aggregates)) for r in rows if r[0] in wanted]
    columns = [(a.field, a.kind, a.function) for a in aggregates]
    return pb.SeriesValues(series=series_of(picked, columns, 2))


class PageDataRpcs(DashboardRpcs):
    """GetPageData."""

    _storage: str | None = None

    async def GetPageData(
        self, request: pb.GetPageDataRequest, context: Any
    ) -> pb.GetPageDataResponse:
        principal = require_principal()
        errors = ErrorCollector()
        page_id = parse_uuid(errors, "page_id", request.page_id)
        start, end = parse_range(errors, request)
        errors.raise_if_any()
        async with scoped(self.pool, principal) as conn:
            _, page = await load_page(conn, principal, page_id)
            principal.require(TELEMETRY_READ)
            widgets = [widget_pb(w) for w in await widget_store.page_widgets(conn, page_id)]
            # Devices still on the page (a widget may name one removed since) that the
            # caller may see.
            on_page, sees = frozenset(page.device_ids), sees_device(principal)
            plan = _Plan(widgets, lambda d: d in on_page and sees(d))
            require_work_within(
                "dashboards:page_data_cells",
                plan.cells(start, end),
                self.settings.telemetry_max_cells_per_call,
                "ask for a shorter range, or use wider buckets on the page's charts",
            )
            return await self._read(conn, principal, plan, start, end)

    async def _read(
        self, conn: asyncpg.Connection, principal: Principal, plan: _Plan, start: datetime,
        end: datetime,
    ) -> pb.GetPageDataResponse:  # fmt: skip
        latest_fields = list(plan.latest_fields)
        latest: dict[uuid.UUID, asyncpg.Record] = {}
        if plan.latest_devices:
            found = await telemetry_store.latest(
                conn, list(plan.latest_devices), latest_fields, device_filter(principal)
            )
            latest = {r[0]: r for r in found}
        field_index = {f: i for i, f in enumerate(latest_fields)}
        series: dict[timedelta, tuple[list[asyncpg.Record], dict[Any, int]]] = {}
        if plan.series:
            if self._storage is None:
                self._storage = await partitions.storage_kind(conn)
            for width, (group_devices, group_aggs) in plan.series.items():
                rows = await telemetry_store.aggregate(
                    conn, self._storage, list(group_devices), start, end, list(group_aggs),
                    width=width,
                )  # fmt: skip
                series[width] = (rows, {a: i for i, a in enumerate(group_aggs)})
        stat_rows: list[asyncpg.Record] = []
        if plan.stat_devices:
            stat_rows = await data_store.range_aggregates(
                conn, list(plan.stat_devices), start, end, list(plan.stat_aggregates)
            )
        stat_index = {a: i for i, a in enumerate(plan.stat_aggregates)}
        alarms: dict[uuid.UUID, list[asyncpg.Record]] = defaultdict(list)
        if plan.alarm_devices:
            for r in await data_store.open_alarm_counts(conn, list(plan.alarm_devices)):
                alarms[r["device_id"]].append(r)
        out = pb.GetPageDataResponse()
        for w in plan.widgets:
            devices = plan.devices[w.id]
            part = out.widgets.add(
                widget_id=w.id, type=w.type, hidden_device_count=plan.hidden[w.id]
            )
            if w.type in _LATEST:
                part.latest.CopyFrom(_latest_part(latest, _latest_fields(w), field_index, devices))
            elif w.type == pb.WIDGET_TYPE_TIME_SERIES:
                rows, index = series[w.time_series.bucket_width.ToTimedelta()]
                aggs = _aggregates(w.time_series.aggregations)
                part.series.CopyFrom(_series_part(rows, aggs, index, devices))
            elif w.type == pb.WIDGET_TYPE_STAT:
                aggs = _aggregates([w.stat.aggregation])
                part.series.CopyFrom(_series_part(stat_rows, aggs, stat_index, devices))
            elif w.type == pb.WIDGET_TYPE_ALARM_LIST:
                for d in devices:
                    for r in alarms.get(d, ()):
                        part.alarms.device_ids.append(str(d))
                        part.alarms.severities.append(r["severity"])
                        part.alarms.counts.append(r["open"])
                        part.alarms.unacknowledged.append(r["unacknowledged"])
        return out
