"""A widget's config, checked per type: devices the page holds (and the caller may see),
known telemetry fields, aggregations TelemetryService computes (its own checks, reused),
and a command template the page holds. Every problem is a field violation under
``widget.<type>.…``."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence

from lifebox.v1 import dashboards_pb2 as pb
from lifebox_grpc.errors import ErrorCollector
from lifebox_grpc.services.common import check_text, parse_uuid
from lifebox_grpc.services.dashboards.mapping import TYPES
from lifebox_grpc.services.telemetry_requests import (
    MAX_BUCKET,
    MIN_BUCKET,
    parse_aggregations,
    parse_fields,
)
from lifebox_grpc.store import telemetry as telemetry_store

MAX_WIDGET_DEVICES = 20
MAX_LIST_DEVICES = 100
MAX_AGGREGATIONS = 10
MAX_TABLE_FIELDS = 20
MAX_TEXT = 10_000
MAX_GRID = 1_000
MAX_SPAN = 100


def _prefixed(
    errors: ErrorCollector, prefix: str, check: Callable[[ErrorCollector], object]
) -> None:
    """Run a check written for a top-level request field under ``prefix``."""
    inner = ErrorCollector()
    check(inner)
    for v in inner.violations:
        errors.add(f"{prefix}.{v.field}", v.description)


class PageContext:
    """What a widget's config may name: the page's devices the caller may see, and the
    page's command templates."""

    def __init__(
        self,
        devices: Sequence[uuid.UUID],
        templates: Sequence[uuid.UUID],
        visible: Callable[[uuid.UUID], bool],
    ) -> None:
        self.devices = frozenset(devices)
        self.templates = frozenset(templates)
        self.visible = visible

    def device(self, errors: ErrorCollector, field: str, value: str) -> None:
        parsed = parse_uuid(errors, field, value)
        if parsed is not None and (parsed not in self.devices or not self.visible(parsed)):
            errors.add(field, "must be a device of the page")

    def devices_of(
        self, errors: ErrorCollector, field: str, values: Sequence[str], most: int
    ) -> None:
        if not values:
            errors.add(field, "name at least one device of the page")
        elif len(values) > most:
            errors.add(field, f"at most {most} devices")
        if len(set(values)) != len(values):
            errors.add(field, "must not repeat a device")
        for i, value in enumerate(values[:most]):
            self.device(errors, f"{field}[{i}]", value)


def check_position(errors: ErrorCollector, field: str, p: pb.WidgetPosition) -> None:
    for name, value, low, high in (
        ("x", p.x, 0, MAX_GRID), ("y", p.y, 0, MAX_GRID),
        ("width", p.width, 1, MAX_SPAN), ("height", p.height, 1, MAX_SPAN),
    ):  # fmt: skip
        if not low <= value <= high:
            errors.add(f"{field}.{name}", f"must be from {low} to {high}")


def check_config(errors: ErrorCollector, widget: pb.Widget, page: PageContext) -> None:
    """Violations of ``widget``'s type and config (``widget.type``, ``widget.<config>…``)."""
    if widget.type not in TYPES:
        errors.add("widget.type", "required: one of the WidgetType values")
        return
    _, field = TYPES[widget.type]
    chosen = widget.WhichOneof("config")
    if chosen is not None and chosen != field:
        errors.add(f"widget.{chosen}", f"does not match the type: set widget.{field}")
        return
    at = f"widget.{field}"
    if widget.type == pb.WIDGET_TYPE_TIME_SERIES:
        c = widget.time_series
        page.devices_of(errors, f"{at}.device_ids", c.device_ids, MAX_WIDGET_DEVICES)
        if len(c.aggregations) > MAX_AGGREGATIONS:
            errors.add(f"{at}.aggregations", f"at most {MAX_AGGREGATIONS} aggregations")
        _prefixed(errors, at, lambda e: parse_aggregations(e, c.aggregations))
        width = c.bucket_width.ToTimedelta()
        if not c.HasField("bucket_width"):
            errors.add(f"{at}.bucket_width", "required")
        elif c.bucket_width.nanos or not MIN_BUCKET <= width <= MAX_BUCKET:
            errors.add(f"{at}.bucket_width", "must be whole seconds from 1 minute to 31 days")
    elif widget.type == pb.WIDGET_TYPE_GAUGE:
        g = widget.gauge
        page.device(errors, f"{at}.device_id", g.device_id)
        kind = telemetry_store.FIELD_KINDS.get(g.field)
        if kind is None or g.field == "extra":
            errors.add(f"{at}.field", f"unknown field {g.field[:80]!r}")
        elif kind not in telemetry_store.NUMERIC_KINDS:
            errors.add(f"{at}.field", f"a gauge needs a numeric field; {g.field} is {kind}")
        if not g.max > g.min:
            errors.add(f"{at}.max", "must be above min")
    elif widget.type == pb.WIDGET_TYPE_STAT:
        s = widget.stat
        page.devices_of(errors, f"{at}.device_ids", s.device_ids, MAX_WIDGET_DEVICES)
        inner = ErrorCollector()
        parse_aggregations(inner, [s.aggregation])
        for v in inner.violations:
            errors.add(f"{at}.aggregation.{v.field.partition('.')[2]}", v.description)
    elif widget.type == pb.WIDGET_TYPE_TABLE:
        t = widget.table
        page.devices_of(errors, f"{at}.device_ids", t.device_ids, MAX_LIST_DEVICES)
        if not t.fields:
            errors.add(f"{at}.fields", "name at least one field")
        elif len(t.fields) > MAX_TABLE_FIELDS:
            errors.add(f"{at}.fields", f"at most {MAX_TABLE_FIELDS} fields")
        _prefixed(errors, at, lambda e: parse_fields(e, t.fields) if t.fields else None)
    elif widget.type == pb.WIDGET_TYPE_MAP:
        page.devices_of(errors, f"{at}.device_ids", widget.map.device_ids, MAX_LIST_DEVICES)
    elif widget.type == pb.WIDGET_TYPE_ALARM_LIST:
        page.devices_of(errors, f"{at}.device_ids", widget.alarm_list.device_ids, MAX_LIST_DEVICES)
    elif widget.type == pb.WIDGET_TYPE_COMMAND_BUTTON:
        b = widget.command_button
        template = parse_uuid(errors, f"{at}.command_template_id", b.command_template_id)
        if template is not None and template not in page.templates:
            errors.add(f"{at}.command_template_id", "must be a command template of the page")
        page.device(errors, f"{at}.device_id", b.device_id)
        check_text(errors, f"{at}.label", b.label, max_length=100, required=False)
    elif widget.type == pb.WIDGET_TYPE_TEXT and len(widget.text.markdown) > MAX_TEXT:
        errors.add(f"{at}.markdown", f"must be at most {MAX_TEXT} characters")
