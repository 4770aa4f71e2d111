"""`lifebox loadgen`: register devices if asked, publish, print what was sent and then
where it went (committed, rejected, dropped by the broker: :mod:`.accounting`)."""

from __future__ import annotations

import argparse
import asyncio
import sys

import asyncpg

from lifebox_grpc.config import Settings
from lifebox_grpc.loadgen.accounting import RunLedger
from lifebox_grpc.loadgen.credentials import (
    BrokerRefusedError,
    issue_credentials,
    wait_until_accepted,
)
from lifebox_grpc.loadgen.run import LoadgenError, LoadPlan, print_progress, run_loadgen
from lifebox_grpc.runtime.endpoints import resolve_endpoints
from lifebox_grpc.runtime.mosquitto import SYS_INTERVAL_S
from lifebox_grpc.store.fleet import register_fleet


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--devices", type=int, default=100, help="simulated devices (D)")
    parser.add_argument("--per-message", type=int, default=1, help="readings per message (K)")
    parser.add_argument(
        "--rate", type=float, default=0.0, help="readings/s per device; 0 = as fast as possible"
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds to publish")
    parser.add_argument("--messages", type=int, default=None, help="stop after N messages")
    parser.add_argument(
        "--connections",
        type=int,
        default=4,
        help="shared MQTT connections without --register (with it: one per device)",
    )
    parser.add_argument("--qos", type=int, choices=(0, 1), default=1)
    parser.add_argument(
        "--register",
        action="store_true",
        help="create the tenant 'loadgen' and its devices first (idempotent), give each device "
        "a fresh credential of its own and open one connection per device, logged in as it",
    )
    parser.add_argument("--serial-prefix", default="LG-", help="device serials: <prefix>000001…")
    parser.add_argument(
        "--settle",
        type=float,
        default=10.0,
        help="after publishing, wait until every reading is committed, rejected or counted "
        "as dropped by the broker, or until nothing changed for this many seconds (0: don't "
        "wait, print only what was sent)",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    endpoints = resolve_endpoints(settings)
    serials = [f"{args.serial_prefix}{i:06d}" for i in range(1, args.devices + 1)]
    credentials = None
    if args.register:
        credentials = asyncio.run(_register(endpoints.owner_dsn, args.serial_prefix, args.devices))
        serials = list(credentials)
        print(
            f"registered {len(serials)} devices ({args.serial_prefix}…) for tenant 'loadgen', "
            "each with a new credential",
            flush=True,
        )
        last = serials[-1]
        try:
            wait_until_accepted(endpoints.mqtt_url, last, credentials[last])
        except BrokerRefusedError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    if args.rate == 0 and args.duration and args.per_message and args.devices:
        print("publishing as fast as the broker acknowledges", flush=True)
    plan = LoadPlan(
        mqtt_url=endpoints.mqtt_url,
        serials=serials,
        per_message=args.per_message,
        rate=args.rate,
        duration_s=args.duration,
        messages=args.messages,
        connections=args.connections,
        qos=args.qos,
        credentials=credentials,
    )
    ledger = (
        RunLedger(endpoints.owner_dsn, endpoints.mqtt_url, serials, 2 * SYS_INTERVAL_S + 1)
        if args.settle > 0
        else None
    )
    try:
        report = run_loadgen(plan, print_progress)
        print(
            f"sent {report.sent:,} messages, {report.messages:,} acknowledged by the broker / "
            f"{report.readings:,} readings in {report.seconds:.1f}s: "
            f"{report.messages_per_s:,.0f} messages/s, {report.readings_per_s:,.0f} readings/s",
            flush=True,
        )
        if ledger is not None:
            accounting = asyncio.run(
                ledger.settle(report.readings, args.per_message, args.settle, print_progress)
            )
            print("\n".join(accounting.lines()))
    except LoadgenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if ledger is not None:
            ledger.close()
    return 0


async def _register(dsn: str, prefix: str, count: int) -> dict[str, str]:
    """The devices (made if missing) and a fresh credential each: serial -> secret."""
    conn = await asyncpg.connect(dsn)
    try:
        fleet = await register_fleet(
            conn, name="Load generator", slug="loadgen", serial_prefix=prefix, count=count
        )
        return await issue_credentials(conn, fleet.client_id, fleet.devices)
    finally:
        await conn.close()
