"""The native ingest core: telemetry decoding and PostgreSQL binary COPY encoding.

This module is the only importer of ``lifebox_grpc._ingest_native``. It turns the plain values
that cross the boundary (16-byte uuids, epoch microseconds, tuples) into the typed objects the
ingest service uses; the decoding rules are documented in ``ingest_native/src/decode.rs``.
Per-row work stays in Rust: Python only touches each message, reject and device.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

from lifebox_grpc import _ingest_native

__all__ = [
    "COLUMNS",
    "COLUMN_TYPES",
    "EXPRESSION_ERROR_CODES",
    "EXPRESSION_FUNCTIONS",
    "POINT_COLUMNS",
    "POINT_COLUMN_TYPES",
    "POINT_SKIP_CODES",
    "DecodeLimits",
    "DecodedBatch",
    "Decoder",
    "Expression",
    "ExpressionColumn",
    "ExpressionError",
    "ExpressionProblem",
    "FormulaSet",
    "LimitsError",
    "NativeError",
    "Reject",
    "UnknownField",
    "check_expression",
    "evaluate_conditions",
    "evaluate_formula",
    "evaluate_numbers",
    "version",
]

NativeError = _ingest_native.NativeError
"""Base of every error the native core raises for a call it refuses."""
LimitsError = _ingest_native.LimitsError
"""A decode limit is out of its usable range (a subclass of :class:`NativeError`)."""

COLUMN_TYPES: tuple[tuple[str, str], ...] = tuple(_ingest_native.columns())
"""``telemetry_events`` columns in COPY order with their PostgreSQL types (as
``information_schema.columns.data_type`` spells them): the one definition lives in Rust."""
COLUMNS: tuple[str, ...] = tuple(name for name, _ in COLUMN_TYPES)
"""``telemetry_events`` column names in COPY order, for ``copy_to_table(columns=...)``."""


def version() -> str:
    """The version of the native build that was loaded."""
    return _ingest_native.version()


@dataclass(frozen=True)
class DecodeLimits:
    """What a payload may hold; each limit is an ingest setting. Exceeding one rejects the
    message (size, readings) or the reading (the others) with the code named here."""

    max_payload_bytes: int = 262_144  # too_large
    max_readings_per_message: int = 1000  # too_many_readings
    max_extra_keys: int = 64  # too_many_keys
    max_depth: int = 8  # too_deep: nesting of an extra value ({} or [] is 1)
    max_string_bytes: int = 1024  # string_too_long: text values, keys, strings in extra
    max_past_seconds: int = 30 * 86_400  # ts_out_of_range: oldest accepted reading
    max_future_seconds: int = 300  # ts_out_of_range: newest accepted reading


@dataclass(frozen=True)
class Reject:
    """A reading (``reading_index`` set) or a whole message (``None``) that was not accepted.

    ``code`` is a short stable label (for metrics); ``reason`` is precise human text.
    """

    message_index: int
    reading_index: int | None
    code: str
    reason: str


@dataclass(frozen=True)
class UnknownField:
    """An unknown key seen in ``count`` accepted readings of one device in one batch; the
    JSON type and ``example`` (JSON text) are those of the first value seen."""

    client_id: uuid.UUID
    device_id: uuid.UUID
    name: str
    json_type: str
    count: int
    example: str


@dataclass(frozen=True)
class DecodedBatch:
    """One decoded batch, ready for ``copy_to_table('telemetry_events', source=...,
    columns=COLUMNS, format='binary')``."""

    copy_data: bytes
    """Header, one tuple per accepted reading, trailer."""
    rows: int
    rejects: list[Reject]
    unknown_fields: list[UnknownField]
    latest_us: dict[uuid.UUID, int]
    """Latest accepted reading time per device, in Unix epoch microseconds (keyed by the
    caller's own device id objects)."""
    row_times_us: bytes
    """One little-endian i64 per row: its time in Unix epoch microseconds."""
    rows_per_message: list[int] = field(default_factory=list)
    """Accepted rows of each input message, in input order."""
    points_copy_data: bytes = b""
    """``device_data_points`` COPY data (columns :data:`POINT_COLUMNS`) of the formulas
    evaluated on the accepted rows; empty without points."""
    points: int = 0
    skipped_points: list[tuple[int, str, int]] = field(default_factory=list)
    """(index of the formula in its :class:`FormulaSet`, skip code, count) of the values that
    became no point (codes: :data:`POINT_SKIP_CODES`)."""


class Decoder:
    """Decodes batches of telemetry payloads under fixed limits. Thread-safe: the heavy work
    runs with the GIL released, so several threads decode in parallel."""

    def __init__(self, limits: DecodeLimits = DecodeLimits()) -> None:
        """Raises :class:`LimitsError` if a limit is out of its usable range."""
        self.limits = limits
        self._native = _ingest_native.Decoder(
            limits.max_payload_bytes,
            limits.max_readings_per_message,
            limits.max_extra_keys,
            limits.max_depth,
            limits.max_string_bytes,
            limits.max_past_seconds,
            limits.max_future_seconds,
        )

    def decode(
        self,
        messages: Sequence[tuple[uuid.UUID, uuid.UUID, int, bytes]],
        now_us: int | None = None,
        formulas: FormulaSet | None = None,
        device_types: list[str | None] | None = None,
    ) -> DecodedBatch:
        """Decodes ``(device_id, client_id, received_at_unix_us, payload)`` messages.

        Reading times are judged against ``now_us`` (Unix microseconds; default: the clock).
        Bad payloads become :class:`Reject` entries, never exceptions; :class:`NativeError`
        means the call itself was malformed. With ``formulas``, each accepted reading is
        evaluated in the same native call (``device_types``: each message's device type,
        for formulas scoped to a type).
        """
        if now_us is None:
            now_us = time.time_ns() // 1000
        # The native side reads each uuid's `int` itself (once per distinct object), and names
        # devices and clients in its results by message index or by the caller's own objects:
        # no uuid is converted or built per message here.
        inputs = messages if isinstance(messages, list) else list(messages)
        (
            copy_data,
            rows,
            rejects,
            unknown,
            latest_us,
            row_times_us,
            per_message,
            points_copy,
            points,
            skipped,
        ) = self._native.decode(inputs, now_us, formulas, device_types)
        return DecodedBatch(
            copy_data=copy_data,
            rows=rows,
            rejects=[Reject(*r) for r in rejects],
            unknown_fields=[
                UnknownField(inputs[i][1], inputs[i][0], name, json_type, count, example)
                for i, name, json_type, count, example in unknown
            ],
            # Keys are the device objects of `inputs`, uuid.UUID as typed above.
            latest_us=cast("dict[uuid.UUID, int]", latest_us),
            row_times_us=row_times_us,
            rows_per_message=per_message,
            points_copy_data=points_copy,
            points=points,
            skipped_points=skipped,
        )


# --- expressions (issue 15) ---------------------------------------------------------------
# CEL over a reading's fields (ingest_native/src/cel_expr.rs): the API checks an expression
# with exactly the code ingest evaluates it with.

Expression = _ingest_native.Expression
"""A checked CEL expression (``Expression(source)`` raises :class:`ExpressionError`);
``.fields`` are the variables it reads."""
ExpressionError = _ingest_native.ExpressionError
"""``args[0]`` is the list of problems, each (code, start, end, message)."""
EXPRESSION_ERROR_CODES: tuple[str, ...] = tuple(_ingest_native.expression_error_codes())
EXPRESSION_FUNCTIONS: tuple[tuple[str, int], ...] = tuple(_ingest_native.expression_functions())


@dataclass(frozen=True)
class ExpressionProblem:
    """Why an expression was refused, and where (character offsets, end exclusive)."""

    code: str
    start: int
    end: int
    message: str


def check_expression(source: str) -> tuple[list[str], list[ExpressionProblem]]:
    """The fields ``source`` reads, or every problem it has (never raises for a bad one)."""
    fields, problems = _ingest_native.check_expression(source)
    return fields, [ExpressionProblem(*p) for p in problems]


@dataclass(frozen=True)
class ExpressionColumn:
    """One field's values over a batch of rows: little-endian f64 bytes, NaN for none."""

    name: str
    is_bool: bool
    values: bytes


def evaluate_conditions(
    expressions: Sequence[Expression],
    columns: Sequence[ExpressionColumn],
    rows: int,
    budget_us: int,
) -> tuple[bytes, int]:
    """Every expression on every row, GIL released: one byte per (expression, row) at
    ``e * rows + r`` (1 true, 0 false, 2 unknown: a field absent, an error, not a boolean),
    and how many rows were evaluated before ``budget_us`` ran out."""
    return _ingest_native.evaluate_conditions(
        list(expressions), [(c.name, c.is_bool, c.values) for c in columns], rows, budget_us
    )


def evaluate_numbers(
    expressions: Sequence[Expression],
    columns: Sequence[ExpressionColumn],
    rows: int,
    budget_us: int,
) -> tuple[bytes, int]:
    """As :func:`evaluate_conditions`, values as f64 bytes (true 1.0, false 0.0, NaN
    unknown): for formulas."""
    return _ingest_native.evaluate(
        list(expressions), [(c.name, c.is_bool, c.values) for c in columns], rows, budget_us
    )


# --- calculated metrics (issue 17) --------------------------------------------------------
# Formulas are evaluated by Decoder.decode on each accepted reading
# (ingest_native/src/formulas.rs), with the expression engine above.

FormulaSet = _ingest_native.FormulaSet
"""Enabled formulas, compiled once: ``FormulaSet([(id16, version, client16, device16 | None,
device_type | None, metric, unit | None, Expression), ...], budget_us)``."""
POINT_COLUMN_TYPES: tuple[tuple[str, str], ...] = tuple(_ingest_native.point_columns())
"""``device_data_points`` columns in COPY order with their PostgreSQL types."""
POINT_COLUMNS: tuple[str, ...] = tuple(name for name, _ in POINT_COLUMN_TYPES)
POINT_SKIP_CODES: tuple[str, ...] = tuple(_ingest_native.point_skip_codes())
"""Why a formula's value became no point: missing_field, non_finite, ..."""


def evaluate_formula(
    expression: Expression, columns: Sequence[ExpressionColumn], rows: int
) -> tuple[bytes, list[str | None]]:
    """One expression on ``rows`` stored readings exactly as ingest evaluates a formula:
    f64 bytes (NaN where no point) and, per row, the skip code or None (a point)."""
    return _ingest_native.evaluate_formula(
        expression, [(c.name, c.is_bool, c.values) for c in columns], rows
    )
