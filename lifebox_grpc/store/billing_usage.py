"""Customer pricing and usage metering: all their SQL.

Each metered item is defined once here (:data:`ITEMS`), from the platform's own data, and
the same counts feed GetUsage, prepaid usage charges and postpaid period lines:

* ``device_month``: devices that sent at least one accepted reading in the period (a device
  counts at the price in force at its first reading of the period);
* ``million_readings``: accepted readings (rows of telemetry_events) / 10^6;
* ``command``: commands that reached ``sent`` (their ``sent_at`` falls in the period);
* ``storage_gb_month``: the mean, over the period's sampled days, of the tenant's rows x the
  measured average row size per table (storage_samples, written daily by `lifebox maintain`),
  / 10^9.

A price applies to the use made while it was in force: the period is cut at every price
change and each piece is counted at its own price (no price in force: quantity shown, 0 due).
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import asyncpg

from lifebox_grpc.errors import FailedPrecondition

ITEMS = ("device_month", "million_readings", "command", "storage_gb_month")
CENT = Decimal("0.01")
QUANTUM = Decimal("0.000001")

# One count per item over [$2, $3) of client $1 (device_month: $4, $5 are the period).
_COUNTS: dict[str, str] = {
    "device_month": """
        SELECT count(*) FROM (
            SELECT device_id, min(time) AS first FROM telemetry_events
            WHERE client_id = $1 AND time >= $4 AND time < $5 GROUP BY device_id
        ) d WHERE d.first >= $2 AND d.first < $3
    """,
    "million_readings": """
        SELECT count(*)::numeric / 1000000 FROM telemetry_events
        WHERE client_id = $1 AND time >= $2 AND time < $3
    """,
    "command": """
        SELECT count(*) FROM control_commands
        WHERE client_id = $1 AND sent_at >= $2 AND sent_at < $3
    """,
    # Mean over sampled days of the period (days without a sample do not count).
    "storage_gb_month": """
        SELECT coalesce(sum(bytes) / 1e9 / nullif(count(*), 0), 0) FROM (
            SELECT day, sum(row_count * avg_row_bytes) AS bytes FROM storage_samples
            WHERE client_id = $1 AND day >= $2::date AND day < $3::date GROUP BY day
        ) s
    """,
}
# Share of the period a piece of it is (storage is a mean over days, weighed by piece).
_WEIGHED = frozenset({"storage_gb_month"})


@dataclass(frozen=True)
class Price:
    id: uuid.UUID
    client_id: uuid.UUID
    item: str
    unit_price: Decimal
    currency: str
    valid_from: datetime
    valid_to: datetime | None
    created_at: datetime


def _price(row: Mapping[str, Any]) -> Price:
    return Price(**{name: row[name] for name in Price.__dataclass_fields__})


_PRICE_COLUMNS = "id, client_id, item, unit_price, currency, valid_from, valid_to, created_at"


async def create_price(
    conn: asyncpg.Connection,
    client_id: uuid.UUID,
    item: str,
    unit_price: Decimal,
    currency: str,
    valid_from: datetime,
) -> Price:
    """A new price from ``valid_from``; the price in force then ends there. A price may not
    start before one already scheduled (history is not rewritten)."""
    later = await conn.fetchval(
        "SELECT count(*) FROM customer_pricing WHERE client_id = $1 AND item = $2 "
        "AND valid_from >= $3",
        client_id,
        item,
        valid_from,
    )
    if later:
        raise FailedPrecondition("a price for this item already starts at or after valid_from")
    await conn.execute(
        "UPDATE customer_pricing SET valid_to = $3 WHERE client_id = $1 AND item = $2 "
        "AND valid_from < $3 AND (valid_to IS NULL OR valid_to > $3)",
        client_id,
        item,
        valid_from,
    )
    row = await conn.fetchrow(
        f"INSERT INTO customer_pricing (client_id, item, unit_price, currency, valid_from) "
        f"VALUES ($1, $2, $3, $4, $5) RETURNING {_PRICE_COLUMNS}",
        client_id,
        item,
        unit_price,
        currency,
        valid_from,
    )
    assert row is not None
    return _price(row)


async def list_prices(
    conn: asyncpg.Connection, client_id: uuid.UUID, item: str | None = None
) -> list[Price]:
    rows = await conn.fetch(
        f"SELECT {_PRICE_COLUMNS} FROM customer_pricing WHERE client_id = $1 "
        "AND ($2::text IS NULL OR item = $2) ORDER BY item, valid_from",
        client_id,
        item,
    )
    return [_price(r) for r in rows]


@dataclass(frozen=True)
class Piece:
    """Use of one item during one stretch of the period at one price."""

    start: datetime
    end: datetime
    quantity: Decimal
    unit_price: Decimal
    billable: Decimal
    amount: Decimal


@dataclass(frozen=True)
class Line:
    item: str
    quantity: Decimal
    included: Decimal
    amount: Decimal
    currency: str
    pieces: tuple[Piece, ...]


def _stretches(
    prices: Sequence[Price], start: datetime, end: datetime
) -> list[tuple[datetime, datetime, Decimal]]:
    """[start, end) cut at every price change: (from, to, unit price; 0 where none)."""
    cuts = {start, end}
    for p in prices:
        for t in (p.valid_from, p.valid_to):
            if t is not None and start < t < end:
                cuts.add(t)
    points = sorted(cuts)
    out = []
    for a, b in itertools.pairwise(points):
        unit = Decimal(0)
        for p in prices:
            if p.valid_from <= a and (p.valid_to is None or p.valid_to > a):
                unit = p.unit_price
        out.append((a, b, unit))
    return out


async def meter(
    conn: asyncpg.Connection,
    client_id: uuid.UUID,
    start: datetime,
    end: datetime,
    *,
    currency: str,
    included: Mapping[str, Decimal],
) -> list[Line]:
    """Every item's use in [start, end), priced; ``included`` is taken off each item's use in
    time order before any of it is charged. Amounts are rounded half up to the cent."""
    all_prices = await list_prices(conn, client_id)
    lines = []
    for item in ITEMS:
        prices = [p for p in all_prices if p.item == item]
        left = included.get(item, Decimal(0))
        pieces = []
        total = Decimal(0)
        span = Decimal((end - start).total_seconds())
        for a, b, unit in _stretches(prices, start, end):
            args = (client_id, a, b, start, end) if item == "device_month" else (client_id, a, b)
            value = await conn.fetchval(_COUNTS[item], *args)
            quantity = Decimal(value or 0)
            if item in _WEIGHED and span:
                quantity = quantity * Decimal((b - a).total_seconds()) / span
            quantity = quantity.quantize(QUANTUM, rounding=ROUND_HALF_UP)
            covered = min(left, quantity)
            left -= covered
            billable = quantity - covered
            amount = (billable * unit).quantize(CENT, rounding=ROUND_HALF_UP)
            pieces.append(Piece(a, b, quantity, unit, billable, amount))
            total += quantity
        lines.append(
            Line(
                item,
                total,
                min(included.get(item, Decimal(0)), total),
                sum((p.amount for p in pieces), Decimal(0)),
                currency,
                tuple(pieces),
            )
        )
    return lines


# -- storage samples (run by `lifebox maintain` on the staff path) -------------------------

SAMPLED_TABLES = (
    "telemetry_events",
    "device_locations",
    "device_data_points",
    "control_commands",
    "device_alarms",
    "alarm_events",
    "devices",
)
_SAMPLE_ROWS = 10_000


async def sample_storage(conn: asyncpg.Connection, day: date) -> int:
    """One storage sample per (client, table) for ``day``, once (a second run that day
    changes nothing); returns the rows written."""
    written = 0
    for table in SAMPLED_TABLES:
        exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"public.{table}")
        if not exists:
            continue
        # Table names are our constants above, never input.
        avg = await conn.fetchval(
            f"SELECT coalesce(avg(pg_column_size(s.*)), 0) "
            f"FROM (SELECT * FROM {table} LIMIT {_SAMPLE_ROWS}) s"
        )
        status = await conn.execute(
            f"""
            INSERT INTO storage_samples (client_id, relation, day, row_count, avg_row_bytes)
            SELECT client_id, $1, $2, count(*), $3 FROM {table} GROUP BY client_id
            ON CONFLICT (client_id, relation, day) DO NOTHING
            """,
            table,
            day,
            Decimal(avg).quantize(CENT),
        )
        written += int(status.split()[-1])
    return written
