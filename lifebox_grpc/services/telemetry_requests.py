"""TelemetryService requests: what each field may hold, checked before any database work.

Every problem of a request is collected (:class:`ErrorCollector`) and reported at once as
INVALID_ARGUMENT; the caps on a call's size live here too.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from lifebox.v1 import telemetry_pb2
from lifebox_grpc.errors import ErrorCollector
from lifebox_grpc.services.common import decode_page_token
from lifebox_grpc.store import telemetry as store

MAX_QUERY_DEVICES = 100
MAX_LATEST_DEVICES = 5_000
MAX_STREAM_DEVICES = 1_000
DEFAULT_TELEMETRY_PAGE = 1_000
MAX_TELEMETRY_PAGE = 10_000
MAX_AGGREGATIONS = 50
MAX_BUCKETS = 10_000
MIN_BUCKET = timedelta(minutes=1)
MAX_BUCKET = timedelta(days=31)
# Default of LIFEBOX_TELEMETRY_MAX_CELLS_PER_CALL (config.py).
MAX_CELLS = 500_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

FUNCTION_FROM_PB = {
    telemetry_pb2.AGGREGATE_FUNCTION_AVG: store.AVG,
    telemetry_pb2.AGGREGATE_FUNCTION_MIN: store.MIN,
    telemetry_pb2.AGGREGATE_FUNCTION_MAX: store.MAX,
    telemetry_pb2.AGGREGATE_FUNCTION_SUM: store.SUM,
    telemetry_pb2.AGGREGATE_FUNCTION_COUNT: store.COUNT,
    telemetry_pb2.AGGREGATE_FUNCTION_FIRST: store.FIRST,
    telemetry_pb2.AGGREGATE_FUNCTION_LAST: store.LAST,
}


# -- validation ---------------------------------------------------------------------------


def parse_fields(errors: ErrorCollector, values: Sequence[str]) -> list[str]:
    """Known field names, in request order without repeats; empty means every known field."""
    if not values:
        return list(store.KNOWN_FIELDS)
    fields: dict[str, None] = {}
    for i, name in enumerate(values):
        if name in store.FIELD_KINDS:
            fields[name] = None
        else:
            errors.add(f"fields[{i}]", f"unknown field {name[:80]!r}: see ListUnknownFields")
    return list(fields)


def parse_range(
    errors: ErrorCollector, request: Any, *, required: bool = True
) -> tuple[datetime, datetime]:
    """[start_time, end_time) of a request; both required, end after start."""
    start = end = _EPOCH
    if request.HasField("start_time"):
        start = request.start_time.ToDatetime(UTC)
    elif required:
        errors.add("start_time", "required")
    if request.HasField("end_time"):
        end = request.end_time.ToDatetime(UTC)
    elif required:
        errors.add("end_time", "required")
    if request.HasField("start_time") and request.HasField("end_time") and end <= start:
        errors.add("end_time", "must be after start_time")
    return start, end


def telemetry_page_size(errors: ErrorCollector, value: int) -> int:
    if value < 0:
        errors.add("page_size", "must not be negative")
    elif value > MAX_TELEMETRY_PAGE:
        errors.add("page_size", f"must be at most {MAX_TELEMETRY_PAGE}")
    return value or DEFAULT_TELEMETRY_PAGE


def _months_between(start: datetime, end: datetime) -> int:
    return (end.year - start.year) * 12 + end.month - start.month + 1


def _describe(width: timedelta) -> str:
    seconds = int(width.total_seconds())
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def parse_bucket(
    errors: ErrorCollector,
    request: telemetry_pb2.AggregateTelemetryRequest,
    start: datetime,
    end: datetime,
) -> timedelta | None:
    """The bucket width (None: calendar months), with the buckets-per-call cap."""
    has_width = request.HasField("bucket_width")
    if request.calendar_month:
        if has_width:
            errors.add("bucket_width", "leave unset when calendar_month is set")
        elif end > start and _months_between(start, end) > MAX_BUCKETS:
            errors.add("start_time", f"at most {MAX_BUCKETS} monthly buckets per call")
        return None
    if not has_width:
        errors.add("bucket_width", "required (or set calendar_month)")
        return None
    width = request.bucket_width.ToTimedelta()
    if request.bucket_width.nanos or not MIN_BUCKET <= width <= MAX_BUCKET:
        errors.add(
            "bucket_width",
            "must be whole seconds from 1 minute to 31 days (calendar_month for months)",
        )
        return None
    if end > start:
        buckets = math.ceil((end - start) / width)
        if buckets > MAX_BUCKETS:
            wider = timedelta(seconds=math.ceil((end - start).total_seconds() / MAX_BUCKETS))
            errors.add(
                "bucket_width",
                f"this range holds {buckets} buckets of {_describe(width)}, more than the "
                f"{MAX_BUCKETS} a call may return: ask for buckets of at least "
                f"{int(wider.total_seconds())}s, or split the range into calls of at most "
                f"{_describe(width * MAX_BUCKETS)}",
            )
    return width


def bucket_count(start: datetime, end: datetime, width: timedelta | None) -> int:
    """How many buckets [start, end) touches: epoch-aligned ones of ``width``, or calendar
    months (None)."""
    if end <= start:
        return 0
    last = end - timedelta(microseconds=1)
    if width is None:
        return _months_between(start, last)
    return (last - _EPOCH) // width - (start - _EPOCH) // width + 1


def parse_aggregations(
    errors: ErrorCollector, values: Sequence[telemetry_pb2.Aggregation]
) -> list[store.Aggregate]:
    if not values:
        errors.add("aggregations", "name at least one aggregation")
    elif len(values) > MAX_AGGREGATIONS:
        errors.add("aggregations", f"at most {MAX_AGGREGATIONS} per call")
    out: list[store.Aggregate] = []
    for i, agg in enumerate(values[:MAX_AGGREGATIONS]):
        kind = store.FIELD_KINDS.get(agg.field)
        function = FUNCTION_FROM_PB.get(agg.function)
        if kind is None:
            errors.add(f"aggregations[{i}].field", f"unknown field {agg.field[:80]!r}")
        if function is None:
            errors.add(f"aggregations[{i}].function", "required")
        elif (
            kind is not None and function in store.NUMERIC_ONLY and kind not in store.NUMERIC_KINDS
        ):
            errors.add(
                f"aggregations[{i}].function",
                f"{function} needs a numeric field; {agg.field} is {kind}",
            )
        if kind is not None and function is not None:
            out.append(store.Aggregate(agg.field, function))
    return out


def query_cursor(errors: ErrorCollector, token: str) -> tuple[uuid.UUID, datetime] | None:
    key = decode_page_token(errors, token, 2)
    if key is None:
        return None
    try:
        device_id, when = uuid.UUID(key[0]), datetime.fromisoformat(key[1])
    except ValueError:
        errors.add("page_token", "is not a token this API returned")
        return None
    return device_id, when
