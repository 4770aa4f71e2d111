"""The cost of calculated metrics on the ingest path, in one run, one table. Asserts nothing.

    .venv/bin/python benchmarks/formulas.py [--messages 2000] [--devices 200] [--repeat 1]

A fresh PostgreSQL cluster and mosquitto, one `lifebox ingest` worker, the Rust load
generator at 50 readings per message over a fleet of 200 devices (ingest_e2e.py's Bench):

(1) baseline: no formulas (readings/s committed, first publish to last commit), measured
    first and last, the best of both
(2) the same with 10 enabled tenant-wide formulas (unit conversions and 2-3-field
    arithmetic): 10 points per reading, evaluated in the native decode and COPYed in the
    batch's transaction. Readings/s, data points/s beside them (the worker's own counters),
    and the ratio to (1).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import sys
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest_e2e import Bench, mqtt_path, say

from lifebox_grpc.store.pool import tenant_transaction

FORMULAS = [
    ("temperature_f", "temperature_c * 9 / 5 + 32", "degF"),
    ("power_l1_kw", "voltage_l1 * current_l1 / 1000", "kW"),
    ("voltage_avg", "(voltage_l1 + voltage_l2 + voltage_l3) / 3", "V"),
    ("current_total", "current_l1 + current_l2 + current_l3", "A"),
    ("active_kw", "active_power_w / 1000", "kW"),
    ("pf_calc", "active_power_w / apparent_power_va", None),
    ("humidity_ratio", "humidity_pct / 100", None),
    ("pressure_kpa", "pressure_hpa / 10", "kPa"),
    ("energy_mj", "energy_import_kwh * 3.6", "MJ"),
    ("co2_pct", "co2_ppm / 10000", "%"),
]


async def create_formulas(
    bench: Bench, formulas: list[tuple[str, str, str | None]], device_type: str | None = None
) -> None:
    """Replaces the tenant's formulas (``device_type``: scoped to that type)."""
    conn = await asyncpg.connect(bench.db.owner_dsn)
    try:
        async with tenant_transaction(conn, None, staff=True):
            await conn.execute(
                "DELETE FROM calculation_formulas WHERE client_id = $1", bench.client_id
            )
            await conn.executemany(
                "INSERT INTO calculation_formulas (client_id, name, expression, unit, "
                "device_type) VALUES ($1, $2, $3, $4, $5)",
                [(bench.client_id, *f, device_type) for f in formulas],
            )
    finally:
        await conn.close()


async def truncate_points(bench: Bench) -> None:
    conn = await asyncpg.connect(bench.db.superuser_lifebox_dsn)
    try:
        await conn.execute("TRUNCATE device_data_points")
    finally:
        await conn.close()


async def measured(bench: Bench, serials: list[str], messages: int) -> tuple[float, float, float]:
    """(readings/s, points/s, skipped values) of one run; the tables are emptied after."""
    worker = bench.worker
    assert worker is not None
    points_before = worker.metric("lifebox_ingest_points_total")
    skipped_before = worker.metric("lifebox_ingest_points_skipped_total")
    rate = (await mqtt_path(bench, serials, messages, 50))[0]
    points = worker.metric("lifebox_ingest_points_total") - points_before
    skipped = worker.metric("lifebox_ingest_points_skipped_total") - skipped_before
    await bench.truncate()
    await truncate_points(bench)
    return rate, rate * points / (messages * 50), skipped


async def run(bench: Bench, args: argparse.Namespace) -> None:
    devices = await bench.register(args.devices)
    serials = [s for _, s in devices]
    say(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    bench.start_worker()
    base = max([(await measured(bench, serials, args.messages))[0] for _ in range(args.repeat)])
    runs: dict[str, tuple[float, float, float]] = {}
    for label, formulas, device_type in (
        ("(2) 10 formulas on every device (10 points per reading)", FORMULAS, None),
        ("(3) 10 formulas of a type no device has (no points)", FORMULAS, "none-such"),
        ("(3) 1 formula on every device (1 point per reading)", FORMULAS[:1], None),
    ):
        await create_formulas(bench, formulas, device_type)
        runs[label] = max(
            [await measured(bench, serials, args.messages) for _ in range(args.repeat)]
        )
    # The baseline again, last: the first runs of a fresh cluster are the slowest (the
    # best of both is (1)), so no row gains from its place in the order.
    await create_formulas(bench, [])
    base = max(
        base, *[(await measured(bench, serials, args.messages))[0] for _ in range(args.repeat)]
    )
    bench.stop_worker()
    say("")
    title = f"ingest at 50 readings/message, {args.devices} devices"
    say(f"{title:58} {'readings/s':>11} {'points/s':>10} {'vs (1)':>7}")
    say(f"{'(1) no formulas (baseline, same run)':58} {base:>11,.0f} {0:>10,}")
    for label, (rate, points, skipped) in runs.items():
        say(
            f"{label:58} {rate:>11,.0f} {points:>10,.0f} {rate / base:>7.0%}  skipped {skipped:,.0f}"
        )
    rate = next(iter(runs.values()))[0]
    say(f"readings/s drop with 10 formulas: {1 - rate / base:.1%} (target <= 20 %)")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=2000, help="messages of 50 readings")
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=1, help="best of N runs per figure")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        await run(Bench(stack), args)


if __name__ == "__main__":
    asyncio.run(main())
