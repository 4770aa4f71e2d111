"""The native points encoder agrees with the migrated device_data_points, and its skip codes
with the metric's documented reasons."""

from __future__ import annotations

import time
import uuid

import asyncpg
import pytest

from lifebox_grpc.native import (
    POINT_COLUMN_TYPES,
    POINT_SKIP_CODES,
    Decoder,
    Expression,
    FormulaSet,
    NativeError,
)


async def test_point_columns_are_the_migrated_tables_columns(
    owner_conn: asyncpg.Connection,
) -> None:
    rows = await owner_conn.fetch(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'public' AND table_name = 'device_data_points'"
    )
    table = {r["column_name"]: r["data_type"] for r in rows}
    assert set(table) == {name for name, _ in POINT_COLUMN_TYPES}
    assert all(table[name] == pg_type for name, pg_type in POINT_COLUMN_TYPES)


def test_skip_codes_are_the_documented_reasons() -> None:
    assert POINT_SKIP_CODES == (
        "missing_field", "non_finite", "not_a_number", "error", "over_budget",
    )  # fmt: skip


def test_decode_evaluates_formulas_per_device_type_and_counts_skips() -> None:
    client, meter, sensor = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    formulas = FormulaSet(
        [
            (uuid.uuid4().bytes, 3, client.bytes, None, "meter", "ratio", None,
             Expression("active_power_w / apparent_power_va")),
        ],
        1_000_000,
    )  # fmt: skip
    now = time.time_ns() // 1000
    ms = now // 1000 - 1000
    payload = (
        f'[{{"ts": {ms}, "active_power_w": 1, "apparent_power_va": 2}}, '
        f'{{"ts": {ms + 1}, "active_power_w": 1}}]'
    ).encode()
    batch = Decoder().decode(
        [(meter, client, now, payload), (sensor, client, now, payload)],
        formulas=formulas,
        device_types=["meter", "sensor"],
    )
    assert (batch.rows, batch.points) == (4, 1)
    assert batch.skipped_points == [(0, "missing_field", 1)]
    assert batch.points_copy_data.startswith(b"PGCOPY\n\xff\r\n\0")


def test_device_types_must_match_the_messages() -> None:
    client = uuid.uuid4()
    formulas = FormulaSet(
        [(uuid.uuid4().bytes, 1, client.bytes, None, None, "x", None, Expression("battery_v"))],
        1000,
    )
    with pytest.raises(NativeError, match="device types"):
        Decoder().decode(
            [(uuid.uuid4(), client, time.time_ns() // 1000, b"{}")],
            formulas=formulas,
            device_types=[],
        )
