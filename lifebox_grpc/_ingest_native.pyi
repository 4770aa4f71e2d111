# Hand-written stub of the Rust extension (ingest_native/src/lib.rs); checked by
# `python -m mypy.stubtest lifebox_grpc._ingest_native`. Only lifebox_grpc.native imports it.

from typing import Literal, final
from uuid import UUID

__all__ = [
    "Decoder",
    "Expression",
    "ExpressionError",
    "FormulaSet",
    "LimitsError",
    "NativeError",
    "check_expression",
    "columns",
    "evaluate",
    "evaluate_conditions",
    "evaluate_formula",
    "expression_error_codes",
    "expression_functions",
    "point_columns",
    "point_skip_codes",
    "version",
]

class NativeError(Exception):
    """A call the native ingest core refuses."""

class LimitsError(NativeError):
    """Decode limits out of range."""

def version() -> str: ...
def columns() -> list[tuple[str, str]]:
    """`telemetry_events` columns in COPY order, as (name, PostgreSQL type)."""

@final
class Decoder:
    """Decodes batches under fixed limits; safe to share between threads."""

    def __new__(
        cls,
        max_payload_bytes: int,
        max_readings_per_message: int,
        max_extra_keys: int,
        max_depth: int,
        max_string_bytes: int,
        max_past_seconds: int,
        max_future_seconds: int,
    ) -> Decoder: ...
    def decode(
        self,
        messages: list[tuple[UUID | bytes, UUID | bytes, int, bytes]],
        now_us: int,
        formulas: FormulaSet | None = None,
        device_types: list[str | None] | None = None,
    ) -> tuple[
        bytes,  # copy_data
        int,  # rows
        list[tuple[int, int | None, str, str]],  # rejects: message, reading, code, reason
        # unknown fields, per device: (index of a message of the device, name, json type,
        # count, example)
        list[tuple[int, str, str, int, str]],
        dict[UUID | bytes, int],  # latest_us: the caller's device id object -> unix us
        bytes,  # row_times_us: little-endian i64 per row
        list[int],  # rows_per_message
        bytes,  # points_copy_data: device_data_points COPY (empty without points)
        int,  # points
        list[tuple[int, str, int]],  # skipped points: (formula index, code, count)
    ]:
        """Decodes `(device_id, client_id, received_at_us, payload)` messages; ids are
        `uuid.UUID` or their 16 bytes. With `formulas`, evaluates them on every accepted
        reading; `device_types` has one entry per message."""

# --- expressions (issue 15): ingest_native/src/cel_py.rs ---

_ExprErrorCode = Literal[
    "empty",
    "too_long",
    "syntax",
    "comprehension",
    "function_not_allowed",
    "field_access",
    "literal_not_allowed",
    "name_too_long",
]
# (code, start, end, message): character offsets, end exclusive.
_ExprProblem = tuple[_ExprErrorCode, int, int, str]

class ExpressionError(ValueError):
    """An expression that cannot be checked; args[0] lists its problems as (code, start, end,
    message)."""

def expression_error_codes() -> list[str]:
    """Every expression problem code, in a fixed order."""

def expression_functions() -> list[tuple[str, int]]:
    """The functions an expression may call, as (name, arity)."""

def check_expression(source: str) -> tuple[list[str], list[_ExprProblem]]:
    """Checks `source` without raising: (fields it reads, sorted; problems). A valid expression
    has no problems; an invalid one no fields."""

@final
class Expression:
    """A checked expression; immutable, shareable between threads."""

    def __new__(cls, source: str) -> Expression: ...
    @property
    def source(self) -> str: ...
    @property
    def fields(self) -> list[str]:
        """The fields the expression reads, sorted, each once."""

def evaluate(
    expressions: list[Expression],
    columns: list[tuple[str, bool, bytes]],
    rows: int,
    budget_us: int,
) -> tuple[bytes, int]: ...
def evaluate_conditions(
    expressions: list[Expression],
    columns: list[tuple[str, bool, bytes]],
    rows: int,
    budget_us: int,
) -> tuple[bytes, int]: ...

# --- calculated metrics (issue 17): ingest_native/src/formulas_py.rs ---

@final
class FormulaSet:
    """Enabled formulas, compiled; immutable, shareable between threads."""

    def __new__(
        cls,
        formulas: list[
            tuple[bytes, int, bytes, bytes | None, str | None, str, str | None, Expression]
        ],
        budget_us: int,
    ) -> FormulaSet: ...
    def __len__(self) -> int: ...

def point_columns() -> list[tuple[str, str]]:
    """`device_data_points` columns in COPY order, as (name, PostgreSQL type)."""

def point_skip_codes() -> list[str]:
    """Every skipped-point code, in a fixed order."""

def evaluate_formula(
    expression: Expression, columns: list[tuple[str, bool, bytes]], rows: int
) -> tuple[bytes, list[str | None]]:
    """One expression on stored readings as ingest evaluates a formula: (f64 values, NaN where
    no point; each row's skip code or None)."""
