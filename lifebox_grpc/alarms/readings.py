"""One device's readings as columns: reading times and one array of doubles per field.

Evaluation reads them from PostgreSQL already as arrays (one row per device, ``array_agg``
of each field with NaN for an absent value), so the native evaluator gets its columns
without a Python step per reading and per field; a reading becomes a mapping only where a
rule raised or cleared (its event's values). Dry runs and tests build one from rows.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from lifebox_grpc.alarms.conditions import BOOLEAN_FIELDS
from lifebox_grpc.native import COLUMN_TYPES

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_US = timedelta(microseconds=1)
_INTEGER_FIELDS = frozenset(name for name, kind in COLUMN_TYPES if kind == "bigint")


def us_of(value: datetime) -> int:
    return (value - EPOCH) // ONE_US


def time_of(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def typed(name: str, value: float) -> Any:
    """A column's double as the field's own type (None where absent)."""
    if math.isnan(value):
        return None
    if name in BOOLEAN_FIELDS:
        return value != 0.0
    if name in _INTEGER_FIELDS:
        return int(value)
    return value


@dataclass
class Readings:
    """Readings in time order: ``times_us`` and, per field, doubles (NaN: absent)."""

    times_us: list[int]
    columns: dict[str, array[float]]

    def __len__(self) -> int:
        return len(self.times_us)

    def time(self, index: int) -> datetime:
        return time_of(self.times_us[index])

    def value(self, name: str | None, index: int) -> float | None:
        if name is None:
            return None
        v = self.columns[name][index]
        return None if math.isnan(v) else float(v)

    def row(self, index: int) -> dict[str, Any]:
        """The reading as a mapping: ``time`` and each field in its own type."""
        return {
            "time": self.time(index),
            **{f: typed(f, col[index]) for f, col in self.columns.items()},
        }

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, Any]], fields: Sequence[str]) -> Readings:
        """From rows with ``time`` and the fields (records or dicts), in time order."""
        rows = list(rows)
        return cls(
            [us_of(r["time"]) for r in rows],
            {
                f: array("d", [math.nan if (v := r[f]) is None else float(v) for r in rows])
                for f in fields
            },
        )

    @classmethod
    def from_arrays(cls, record: Mapping[str, Any], fields: Sequence[str]) -> Readings:
        """From a row of arrays: ``times_us`` (bigint[]) and each field (float8[], NaN)."""
        return cls(list(record["times_us"]), {f: array("d", record[f]) for f in fields})

    def __add__(self, later: Readings) -> Readings:
        """These readings, then ``later`` ones (same fields)."""
        return Readings(
            self.times_us + later.times_us,
            {f: col + later.columns[f] for f, col in self.columns.items()},
        )
