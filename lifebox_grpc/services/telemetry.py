"""TelemetryService: raw, aggregated, latest and live readings of visible devices.

Mapping only: requests are checked in ``telemetry_requests.py``, the SQL is in
``store/telemetry.py``. Results are column-shaped (:class:`Series`): building a few long
repeated fields is far cheaper than one message per reading, and it is what a plotting
client wants anyway.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from lifebox.v1 import telemetry_pb2, telemetry_pb2_grpc
from lifebox_grpc.auth.principal import Principal, require_principal
from lifebox_grpc.errors import ErrorCollector
from lifebox_grpc.interceptors.stream_access import recheck_stream
from lifebox_grpc.services.common import (
    decode_page_token,
    encode_page_token,
    page_size,
    parse_uuid,
    require_work_within,
    scoped,
    timestamp,
)
from lifebox_grpc.services.device_access import (
    ASSIGNED_ONLY_ROLES,
    device_filter,
    parse_device_ids,
    require_device,
    require_devices,
    require_found,
)
from lifebox_grpc.services.telemetry_requests import (
    FUNCTION_FROM_PB,
    MAX_CELLS,
    MAX_LATEST_DEVICES,
    MAX_QUERY_DEVICES,
    MAX_STREAM_DEVICES,
    bucket_count,
    parse_aggregations,
    parse_bucket,
    parse_fields,
    parse_range,
    query_cursor,
    telemetry_page_size,
)
from lifebox_grpc.services.telemetry_stream import LiveStream, micros, runs
from lifebox_grpc.store import partitions
from lifebox_grpc.store import telemetry as store
from lifebox_grpc.store import unknown_fields as unknown_field_store
from lifebox_grpc.streams.telemetry import TelemetryHub

log = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_KIND_TO_PB = {
    store.DOUBLE: telemetry_pb2.FIELD_TYPE_DOUBLE,
    store.INT64: telemetry_pb2.FIELD_TYPE_INT64,
    store.BOOL: telemetry_pb2.FIELD_TYPE_BOOL,
    store.STRING: telemetry_pb2.FIELD_TYPE_STRING,
}
_FUNCTION_TO_PB = {v: k for k, v in FUNCTION_FROM_PB.items()}
_ZERO = {store.DOUBLE: 0.0, store.INT64: 0, store.BOOL: False, store.STRING: ""}
_KIND_TO_VALUES = {
    store.DOUBLE: "doubles",
    store.INT64: "ints",
    store.BOOL: "bools",
    store.STRING: "strings",
}


# -- mapping ------------------------------------------------------------------------------


def _column(
    field: str, kind: str, values: list[Any], function: str | None = None
) -> telemetry_pb2.Column:
    column = telemetry_pb2.Column(
        field=field,
        type=_KIND_TO_PB[kind],
        function=(
            _FUNCTION_TO_PB[function] if function else telemetry_pb2.AGGREGATE_FUNCTION_UNSPECIFIED
        ),
    )
    target = getattr(column, _KIND_TO_VALUES[kind])
    try:
        # Most columns have no gap: a None makes extend raise, and only then are the
        # values scanned (a scan for None first costs as much as the copy itself).
        target.extend(values)
    except TypeError:
        del target[:]
        zero = _ZERO[kind]
        column.null_indexes.extend(i for i, v in enumerate(values) if v is None)
        target.extend(zero if v is None else v for v in values)
    return column


def series_of(
    rows: Sequence[asyncpg.Record],
    columns: Sequence[tuple[str, str, str | None]],
    first_value: int,
) -> list[telemetry_pb2.Series]:
    """One Series per run of rows of the same device. Each row is (device_id, t micros,
    ..., values from position ``first_value``); ``columns`` is (field, kind, function)."""
    out: list[telemetry_pb2.Series] = []
    for run in runs(rows, 0):
        series = telemetry_pb2.Series(device_id=str(run[0][0]))
        series.time_micros.extend([r[1] for r in run])
        series.columns.extend(
            _column(field, kind, [r[first_value + i] for r in run], function)
            for i, (field, kind, function) in enumerate(columns)
        )
        out.append(series)
    return out


def _raw_columns(fields: Sequence[str]) -> list[tuple[str, str, str | None]]:
    return [(f, store.FIELD_KINDS[f], None) for f in fields]


def _still_visible(device_ids: Sequence[uuid.UUID], principal: Principal) -> None:
    """NOT_FOUND unless ``principal`` may still see every one of ``device_ids``. Operators'
    and viewers' assignments come with the principal, so this reads no database (a device
    deleted from under a stream is not looked for: it sends nothing more anyway)."""
    if principal.role in ASSIGNED_ONLY_ROLES:
        require_found(device_ids, frozenset(principal.assigned_device_ids))


class TelemetryServicer(telemetry_pb2_grpc.TelemetryServiceServicer):
    """The TelemetryService handlers."""

    def __init__(
        self, pool: asyncpg.Pool, fanout: TelemetryHub, *, max_cells: int = MAX_CELLS
    ) -> None:
        self.pool = pool
        self.fanout = fanout
        self.max_cells = max_cells
        self._storage: str | None = None

    async def _storage_kind(self, conn: asyncpg.Connection) -> str:
        if self._storage is None:
            self._storage = await partitions.storage_kind(conn)
        return self._storage

    async def QueryTelemetry(
        self, request: telemetry_pb2.QueryTelemetryRequest, context: Any
    ) -> telemetry_pb2.QueryTelemetryResponse:
        principal = require_principal()
        errors = ErrorCollector()
        device_ids = parse_device_ids(
            errors, "device_ids", request.device_ids, most=MAX_QUERY_DEVICES
        )
        start, end = parse_range(errors, request)
        fields = parse_fields(errors, request.fields)
        size = telemetry_page_size(errors, request.page_size)
        after = query_cursor(errors, request.page_token)
        errors.raise_if_any()
        require_work_within(
            "telemetry:query_cells",
            size * (len(fields) + 1),
            self.max_cells,
            "ask for a smaller page_size or fewer fields",
        )
        async with scoped(self.pool, principal) as conn:
            found = await store.query(
                conn,
                device_filter(principal),
                device_ids,
                start,
                end,
                fields,
                descending=request.descending,
                after=after,
                limit=size + 1,
            )
        require_found(device_ids, found.visible)
        groups = [list(row) for row in found.rows]
        more = sum(len(g[1]) for g in groups) > size
        token = ""
        if more:
            # size + 1 readings came back: drop the last, and continue after the one before.
            for values in groups[-1][1:]:
                values.pop()
            if not groups[-1][1]:
                groups.pop()
            last_time = _EPOCH + timedelta(microseconds=groups[-1][1][-1])
            token = encode_page_token([str(groups[-1][0]), last_time.isoformat()])
        kinds = [store.FIELD_KINDS[f] for f in fields]
        return telemetry_pb2.QueryTelemetryResponse(
            series=[
                telemetry_pb2.Series(
                    device_id=str(g[0]),
                    time_micros=g[1],
                    columns=[
                        _column(f, kind, g[2 + i])
                        for i, (f, kind) in enumerate(zip(fields, kinds, strict=True))
                    ],
                )
                for g in groups
            ],
            next_page_token=token,
        )

    async def AggregateTelemetry(
        self, request: telemetry_pb2.AggregateTelemetryRequest, context: Any
    ) -> telemetry_pb2.AggregateTelemetryResponse:
        principal = require_principal()
        errors = ErrorCollector()
        device_ids = parse_device_ids(
            errors, "device_ids", request.device_ids, most=MAX_QUERY_DEVICES
        )
        start, end = parse_range(errors, request)
        width = parse_bucket(errors, request, start, end)
        aggregates = parse_aggregations(errors, request.aggregations)
        errors.raise_if_any()
        require_work_within(
            "telemetry:aggregate_cells",
            len(device_ids) * bucket_count(start, end, width) * len(aggregates),
            self.max_cells,
            "devices x buckets x aggregations is too large: ask for fewer devices, wider "
            "buckets, a shorter range or fewer aggregations (or split the call)",
        )
        async with scoped(self.pool, principal) as conn:
            await require_devices(conn, principal, device_ids)
            storage = await self._storage_kind(conn)
            rows = await store.aggregate(
                conn, storage, device_ids, start, end, aggregates, width=width
            )
        columns = [(a.field, a.kind, a.function) for a in aggregates]
        return telemetry_pb2.AggregateTelemetryResponse(series=series_of(rows, columns, 2))

    async def GetLatestTelemetry(
        self, request: telemetry_pb2.GetLatestTelemetryRequest, context: Any
    ) -> telemetry_pb2.GetLatestTelemetryResponse:
        principal = require_principal()
        errors = ErrorCollector()
        device_ids = parse_device_ids(
            errors, "device_ids", request.device_ids, most=MAX_LATEST_DEVICES
        )
        fields = parse_fields(errors, request.fields)
        errors.raise_if_any()
        require_work_within(
            "telemetry:latest_cells",
            len(device_ids) * len(fields),
            self.max_cells,
            "ask for fewer devices or fewer fields (or split the call)",
        )
        async with scoped(self.pool, principal) as conn:
            found = await store.latest(conn, device_ids, fields, device_filter(principal))
        require_found(device_ids, {r[0] for r in found})
        rows = [r for r in found if r[1] is not None]
        # One row per device: parallel lists, not a Series per device (5,000 tiny messages).
        return telemetry_pb2.GetLatestTelemetryResponse(
            device_ids=[str(r[0]) for r in rows],
            time_micros=[r[1] for r in rows],
            columns=[
                _column(field, store.FIELD_KINDS[field], [r[3 + i] for r in rows])
                for i, field in enumerate(fields)
            ],
        )

    async def StreamTelemetry(
        self, request: telemetry_pb2.StreamTelemetryRequest, context: Any
    ) -> AsyncIterator[telemetry_pb2.StreamTelemetryResponse]:
        """Each committed reading once: a catch-up by time (from ``start_time``, or after
        each device's newest row), then live, commit by commit, whatever the order in which
        ingest commits reading times (:mod:`lifebox_grpc.services.telemetry_stream`). After
        the LISTEN connection is lost and back, a reading older than the newest sent that
        was committed meanwhile can be missed."""
        principal = require_principal()
        errors = ErrorCollector()
        device_ids = parse_device_ids(
            errors, "device_ids", request.device_ids, most=MAX_STREAM_DEVICES
        )
        fields = parse_fields(errors, request.fields)
        errors.raise_if_any()
        columns = _raw_columns(fields)
        start_us: int | None = None
        async with scoped(self.pool, principal) as conn:
            await require_devices(conn, principal, device_ids)
            # The stream ends (NOT_FOUND) once the caller may no longer see one of them.
            recheck_stream(functools.partial(_still_visible, device_ids))
            if request.HasField("start_time"):
                start_us = micros(request.start_time.ToDatetime(UTC))
                after_us = dict.fromkeys(device_ids, start_us - 1)
            else:
                latest = await store.latest_times(conn, device_ids)
                after_us = {d: micros(latest.get(d) or _EPOCH) for d in device_ids}
        # Times first, then subscribe, then the catch-up read: a row committed after the
        # times were taken is found by that read or announced by a notification.
        stream = LiveStream(
            lambda: scoped(self.pool, principal), self.fanout, device_ids, fields, after_us,
            start_us,
        )  # fmt: skip
        async for run in stream.runs():
            for series in series_of(run, columns, 3):
                yield telemetry_pb2.StreamTelemetryResponse(series=series)

    async def ListUnknownFields(
        self, request: telemetry_pb2.ListUnknownFieldsRequest, context: Any
    ) -> telemetry_pb2.ListUnknownFieldsResponse:
        principal = require_principal()
        errors = ErrorCollector()
        size = page_size(errors, request.page_size)
        client_filter = principal.client_id
        if request.client_id:
            wanted = parse_uuid(errors, "client_id", request.client_id)
            if principal.client_id is None:
                client_filter = wanted
            elif wanted is not None and wanted != principal.client_id:
                errors.add("client_id", "only platform staff choose the client")
        key = decode_page_token(errors, request.page_token, 2)
        after = None
        if key:
            client = parse_uuid(errors, "page_token", key[0])
            after = (client, key[1]) if client else None
        errors.raise_if_any()
        async with scoped(self.pool, principal) as conn:
            # Operators and viewers: only what their assigned devices sent.
            devices = device_filter(principal).device_ids
            rows = await unknown_field_store.list_visible_fields(
                conn, client_filter, devices, after=after, limit=size + 1
            )
        page, more = rows[:size], len(rows) > size
        token = encode_page_token([str(page[-1].client_id), page[-1].field_name]) if more else ""
        return telemetry_pb2.ListUnknownFieldsResponse(
            fields=[
                telemetry_pb2.UnknownField(
                    client_id=str(f.client_id),
                    field=f.field_name,
                    inferred_type=f.inferred_type,
                    seen_count=f.seen_count,
                    example_json=f.example_json or "",
                    first_seen_time=timestamp(f.first_seen_at),
                    last_seen_time=timestamp(f.last_seen_at),
                )
                for f in page
            ],
            next_page_token=token,
        )

    async def ListDataPoints(
        self, request: telemetry_pb2.ListDataPointsRequest, context: Any
    ) -> telemetry_pb2.ListDataPointsResponse:
        principal = require_principal()
        errors = ErrorCollector()
        device_id = parse_uuid(errors, "device_id", request.device_id)
        start, end = parse_range(errors, request)
        size = page_size(errors, request.page_size)
        if len(request.metric) > 128:
            errors.add("metric", "must be at most 128 characters")
        key = decode_page_token(errors, request.page_token, 2)
        after = None
        if key:
            try:
                after = (key[0], datetime.fromisoformat(key[1]))
            except ValueError:
                errors.add("page_token", "is not a token this API returned")
        errors.raise_if_any()
        async with scoped(self.pool, principal) as conn:
            await require_device(conn, principal, device_id)
            rows = await store.list_data_points(
                conn, device_id, request.metric or None, start, end, after=after, limit=size + 1
            )
        page, more = rows[:size], len(rows) > size
        token = encode_page_token([page[-1].metric, page[-1].time.isoformat()]) if more else ""
        return telemetry_pb2.ListDataPointsResponse(
            points=[
                telemetry_pb2.DataPoint(
                    metric=p.metric,
                    time=timestamp(p.time),
                    value=p.value,
                    unit=p.unit or "",
                    formula_id=str(p.formula_id) if p.formula_id else "",
                    formula_version=p.formula_version or 0,
                )
                for p in page
            ],
            next_page_token=token,
        )
