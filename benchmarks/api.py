"""API figures with auth and row-level security on: `serve` process(es), load from others.

    .venv/bin/python benchmarks/api.py [--seconds 5] [--procs 2] [--concurrency 32]
                                       [--rounds 3] [--client both|python|rust]
                                       [--serve-procs 1] [--repeat 15]

Starts a throwaway PostgreSQL (migrated, seeded), loads one tenant with 1,000 devices and
telemetry (one device-month of 2-second readings, 1.3 M rows; one reading for every other
device), starts `lifebox serve` as a subprocess (``--serve-procs`` of them on one port,
SO_REUSEPORT), signs in as the tenant's administrator and measures, in one run:

0. the trivial health ``Check`` ceiling (closed loop, every load process at full tilt),
1. ``GetDevice`` at the same concurrency (requests/s, p50/p99), then p50/p99 at half that rate
   (open loop),
2. telemetry RPCs against the same SQL run directly through asyncpg, in the same tenant
   transaction (row-level security on): AggregateTelemetry hourly averages of 5 fields over
   one device-day (43,200 rows) and one device-month; GetLatestTelemetry of 1,000 devices;
   QueryTelemetry paging through 100,000 rows (5 fields, pages of 10,000).

Unary load comes from separate processes, with two clients side by side: plain Python
grpc.aio ones (``--worker`` mode of this script, the reference of issue 7) and
``lifebox-apiload`` (benchmarks/apiload, Rust tonic, built on first use), which costs about a
tenth of the CPU per call, so that the server, not the client, sets the ceiling. On 2 cores
the load competes with the server, which is why every rate is also shown as a share of the
Check ceiling, measured in alternating rounds in the same run. Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import grpc
from google.protobuf import duration_pb2, timestamp_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lifebox.v1 import auth_pb2, auth_pb2_grpc, devices_pb2, devices_pb2_grpc, telemetry_pb2_grpc
from lifebox.v1 import telemetry_pb2 as T
from lifebox_grpc.auth.passwords import hash_password
from lifebox_grpc.runtime.ports import free_port
from lifebox_grpc.store import partitions
from lifebox_grpc.store import telemetry as telemetry_store
from lifebox_grpc.store.devices import DeviceFilter
from lifebox_grpc.store.pool import tenant_transaction

PASSWORD = "benchmark password 123"  # noqa: S105 - a throwaway cluster's only user
DEVICES = 1_000
STEP = timedelta(seconds=2)
DAY_ROWS = 43_200
MONTH_DAYS = 30
QUERY_ROWS = 100_000
QUERY_PAGE = 10_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
CHANNELS = 4  # connections per load process
FIELDS5 = ["voltage_l1", "current_l1", "active_power_w", "temperature_c", "frequency_hz"]


# -- load worker (a separate process) -------------------------------------------------------


async def _worker(args: argparse.Namespace) -> None:
    # Several connections per process (a local subchannel pool each), so that several
    # `serve` processes sharing the port with SO_REUSEPORT all get a share of them.
    channels = [
        grpc.aio.insecure_channel(args.target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(CHANNELS)
    ]
    md = (("authorization", f"Bearer {args.token}"),)
    ids = args.devices.split(",") if args.devices else []
    health = [health_pb2_grpc.HealthStub(c) for c in channels]
    devices = [devices_pb2_grpc.DeviceServiceStub(c) for c in channels]
    auth = [auth_pb2_grpc.AuthServiceStub(c) for c in channels]
    rng = random.Random(os.getpid())
    turn = itertools.count()

    async def one() -> None:
        i = next(turn) % CHANNELS
        if args.method == "check":
            await health[i].Check(health_pb2.HealthCheckRequest())
        elif args.method == "get_me":
            await auth[i].GetMe(auth_pb2.GetMeRequest(), metadata=md)
        else:
            await devices[i].GetDevice(
                devices_pb2.GetDeviceRequest(id=rng.choice(ids)), metadata=md
            )

    for _ in range(20):  # warm up the channel and the server's caches
        await one()
    latencies: list[float] = []
    start = time.perf_counter()
    stop = start + args.seconds

    async def timed() -> None:
        began = time.perf_counter()
        await one()
        latencies.append(time.perf_counter() - began)

    if args.rate:  # open loop: a call every 1/rate seconds, whatever the previous ones do
        pending: set[asyncio.Task[None]] = set()
        interval, n = 1.0 / args.rate, 0
        while (due := start + n * interval) < stop:
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            task = asyncio.create_task(timed())
            pending.add(task)
            task.add_done_callback(pending.discard)
            n += 1
        await asyncio.gather(*pending)
    else:  # closed loop: `concurrency` calls always in flight

        async def loop() -> None:
            while time.perf_counter() < stop:
                await timed()

        await asyncio.gather(*(loop() for _ in range(args.concurrency)))
    elapsed = time.perf_counter() - start
    for channel in channels:
        await channel.close()
    print(json.dumps({"count": len(latencies), "elapsed": elapsed, "latencies": latencies}))


PYTHON_CLIENT = [sys.executable, __file__, "--worker"]
APILOAD = Path(__file__).resolve().parent.parent / "target" / "release" / "lifebox-apiload"


def rust_client() -> list[str] | None:
    """The Rust load client (benchmarks/apiload), built (or brought up to date: a no-op when
    it is) first; the binary as it is without cargo, and None without either."""
    if shutil.which("cargo") is not None:
        print("cargo build --release -p lifebox-apiload (the Rust load client)", file=sys.stderr)
        subprocess.run(
            ["cargo", "build", "--release", "--locked", "-q", "-p", "lifebox-apiload"],
            cwd=APILOAD.parents[2],
            check=True,
        )
    elif not APILOAD.exists():
        print("cargo not found: the Rust load client is skipped", file=sys.stderr)
        return None
    return [str(APILOAD)]


def run_load(
    target: str,
    token: str,
    method: str,
    procs: int,
    seconds: float,
    concurrency: int,
    devices: list[str],
    rate: float = 0.0,
    client: list[str] = PYTHON_CLIENT,
) -> dict[str, float]:
    """Requests/s and p50/p99 (ms) of ``procs`` load processes running ``client``."""
    argv = [
        *client,
        "--target",
        target,
        "--token",
        token,
        "--method",
        method,
        "--seconds",
        str(seconds),
        "--concurrency",
        str(concurrency),
        "--devices",
        ",".join(devices),
        "--rate",
        str(rate / procs if rate else 0),
    ]
    workers = [subprocess.Popen(argv, stdout=subprocess.PIPE) for _ in range(procs)]
    results = [json.loads(w.communicate()[0]) for w in workers]
    latencies = sorted(x for r in results for x in r["latencies"])
    rps = sum(r["count"] / r["elapsed"] for r in results)
    return {
        "rps": rps,
        "p50": 1000 * latencies[len(latencies) // 2],
        "p99": 1000 * latencies[int(len(latencies) * 0.99)],
    }


Figures = dict[str, float]


def alternating_rounds(
    target: str,
    token: str,
    load: tuple[int, float, int, list[str]],
    rounds: int,
    clients: list[list[str]],
) -> list[tuple[Figures, Figures, Figures]]:
    """Check, GetMe and GetDevice from each client in turn, ``rounds`` times; per client, the
    median of each figure over the rounds. Shares of the ceiling are taken within a round
    (this VM's speed drifts between runs) and their median is reported as ``share``; the
    clients take turns inside every round, so drift favours neither."""
    methods = ("check", "get_me", "get_device")
    runs = [{m: list[Figures]() for m in methods} for _ in clients]
    for i in range(rounds):
        print(f"  round {i + 1}/{rounds}", file=sys.stderr)
        for client, by_method in zip(clients, runs, strict=True):
            for method in methods:
                by_method[method].append(run_load(target, token, method, *load, client=client))
    out = []
    for by_method in runs:
        for method in methods:
            for check, run in zip(by_method["check"], by_method[method], strict=True):
                run["share"] = run["rps"] / check["rps"]
        check, me, get = (
            {k: statistics.median(r[k] for r in by_method[m]) for k in by_method[m][0]}
            for m in methods
        )
        out.append((check, me, get))
    return out


# -- setup -----------------------------------------------------------------------------------


async def checkpoint(superuser_dsn: str) -> None:
    conn = await asyncpg.connect(superuser_dsn)
    try:
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


async def load_data(owner_dsn: str) -> dict[str, Any]:
    conn = await asyncpg.connect(owner_dsn)
    try:
        async with tenant_transaction(conn, None, staff=True):
            client_id = await conn.fetchval(
                "INSERT INTO clients (name, slug) VALUES ('Bench', 'bench') RETURNING id"
            )
            await conn.execute(
                "INSERT INTO users (client_id, email, password_hash, role) "
                "VALUES ($1, 'bench@lifebox.local', $2, 'client')",
                client_id,
                hash_password(PASSWORD),
            )
            await conn.execute(
                "INSERT INTO devices (client_id, serial, name, status) "
                "SELECT $1, 'BENCH-' || lpad(i::text, 5, '0'), 'bench ' || i, 'active' "
                "FROM generate_series(1, $2) i",
                client_id,
                DEVICES,
            )
            ids = [
                r["id"]
                for r in await conn.fetch(
                    "SELECT id FROM devices WHERE client_id = $1 ORDER BY serial", client_id
                )
            ]
        end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        start = end - timedelta(days=MONTH_DAYS)
        main = ids[0]
        for day in range(MONTH_DAYS):  # one transaction per day keeps each one small
            async with tenant_transaction(conn, None, staff=True):
                await conn.execute(
                    """
                    INSERT INTO telemetry_events (time, device_id, client_id, voltage_l1,
                        current_l1, active_power_w, temperature_c, frequency_hz, uptime_s)
                    SELECT $3::timestamptz + i * interval '2 seconds', $1, $2,
                           230 + (i % 97) * 0.1, 5 + (i % 13) * 0.2, 1000 + i % 500,
                           20 + (i % 50) * 0.1, 50 + (i % 7) * 0.01, i
                    FROM generate_series(0, $4 - 1) i
                    """,
                    main,
                    client_id,
                    start + timedelta(days=day),
                    DAY_ROWS,
                )
        async with tenant_transaction(conn, None, staff=True):
            await conn.execute(
                "INSERT INTO telemetry_events (time, device_id, client_id, voltage_l1, "
                "current_l1, active_power_w, temperature_c, frequency_hz) "
                "SELECT $3::timestamptz - random() * interval '1 hour', d, $2, 230, 5, 1000, "
                "21, 50 FROM unnest($1::uuid[]) d",
                ids[1:],
                client_id,
                end,
            )
        # A database at rest, as in steady operation: autovacuum's first pass over 1.3 M fresh
        # rows, and the checkpoint after them, would otherwise land inside the measurements.
        await conn.execute("VACUUM (ANALYZE) telemetry_events, devices, device_latest_locations")
        return {"client_id": client_id, "ids": ids, "start": start, "end": end}
    finally:
        await conn.close()


def ts(value: datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


async def _timed(fn: Callable[[], Awaitable[Any]]) -> float:
    began = time.perf_counter()
    await fn()
    return time.perf_counter() - began


async def paired_ms(
    rpc: Callable[[], Awaitable[Any]], direct: Callable[[], Awaitable[Any]], repeat: int
) -> tuple[float, float, float]:
    """Median RPC ms, median direct ms, and the median of each pair's ratio. The two run in
    turns (which goes first alternates), so both see the same caches and the same machine:
    this VM's speed drifts by tens of percent over a few seconds."""
    for fn in (rpc, direct, rpc, direct):
        await fn()  # warm caches, plans and connections
    rpc_times, direct_times, ratios = [], [], []
    for i in range(repeat):
        if i % 2:
            d, r = await _timed(direct), await _timed(rpc)
        else:
            r, d = await _timed(rpc), await _timed(direct)
        rpc_times.append(r)
        direct_times.append(d)
        ratios.append(r / d)
    return (
        1000 * statistics.median(rpc_times),
        1000 * statistics.median(direct_times),
        statistics.median(ratios),
    )


async def telemetry_figures(
    target: str, token: str, app_dsn: str, data: dict[str, Any], repeat: int
) -> list[tuple[str, float, float, float]]:
    """(what, RPC ms, direct SQL ms, median pair ratio) for each telemetry case."""
    channel = grpc.aio.insecure_channel(
        target, options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)]
    )
    api = telemetry_pb2_grpc.TelemetryServiceStub(channel)
    md = (("authorization", f"Bearer {token}"),)
    conn = await asyncpg.connect(app_dsn, server_settings={"timezone": "UTC"})
    client_id, ids, start, end = data["client_id"], data["ids"], data["start"], data["end"]
    main = ids[0]
    hourly = [telemetry_store.Aggregate(f, telemetry_store.AVG) for f in FIELDS5]
    async with tenant_transaction(conn, client_id):
        storage = await partitions.storage_kind(conn)

    def sql(fn: Callable[[asyncpg.Connection], Awaitable[Any]]) -> Callable[[], Awaitable[Any]]:
        async def run() -> Any:
            async with tenant_transaction(conn, client_id):
                return await fn(conn)

        return run

    def aggregate_rpc(first: datetime, last: datetime) -> Callable[[], Awaitable[Any]]:
        request = T.AggregateTelemetryRequest(
            device_ids=[str(main)],
            start_time=ts(first),
            end_time=ts(last),
            bucket_width=duration_pb2.Duration(seconds=3600),
            aggregations=[
                T.Aggregation(field=f, function=T.AGGREGATE_FUNCTION_AVG) for f in FIELDS5
            ],
        )
        return lambda: api.AggregateTelemetry(request, metadata=md)

    def aggregate_sql(first: datetime, last: datetime) -> Callable[[], Awaitable[Any]]:
        return sql(
            lambda c: telemetry_store.aggregate(
                c, storage, [main], first, last, hourly, width=timedelta(hours=1)
            )
        )

    latest_request = T.GetLatestTelemetryRequest(device_ids=[str(d) for d in ids], fields=FIELDS5)
    query_end = start + STEP * QUERY_ROWS

    async def query_rpc() -> None:
        token_ = ""
        rows = 0
        while True:
            page = await api.QueryTelemetry(
                T.QueryTelemetryRequest(
                    device_ids=[str(main)],
                    start_time=ts(start),
                    end_time=ts(query_end),
                    fields=FIELDS5,
                    page_size=QUERY_PAGE,
                    page_token=token_,
                ),
                metadata=md,
            )
            rows += sum(len(s.time_micros) for s in page.series)
            token_ = page.next_page_token
            if not token_:
                break
        assert rows == QUERY_ROWS, rows

    async def query_sql() -> None:
        after = None
        rows = 0
        while True:
            async with tenant_transaction(conn, client_id):
                found = await telemetry_store.query(
                    conn,
                    DeviceFilter(client_id, None),
                    [main],
                    start,
                    query_end,
                    FIELDS5,
                    descending=False,
                    after=after,
                    limit=QUERY_PAGE + 1,
                )
            page = found.rows
            count = sum(len(r[1]) for r in page)
            rows += min(count, QUERY_PAGE)
            if count <= QUERY_PAGE:
                break
            last = page[-1][1][-2] if len(page[-1][1]) > 1 else page[-2][1][-1]
            after = (main, EPOCH + timedelta(microseconds=last))
        assert rows == QUERY_ROWS, rows

    day = (end - timedelta(days=1), end)
    cases = [
        (
            "AggregateTelemetry 1 device-day, hourly avg x5",
            aggregate_rpc(*day),
            aggregate_sql(*day),
            repeat,
        ),
        (
            "AggregateTelemetry 1 device-month, hourly avg x5",
            aggregate_rpc(start, end),
            aggregate_sql(start, end),
            max(5, repeat // 3),
        ),
        (
            "GetLatestTelemetry 1,000 devices x5 fields",
            lambda: api.GetLatestTelemetry(latest_request, metadata=md),
            sql(lambda c: telemetry_store.latest(c, ids, FIELDS5, DeviceFilter(client_id, None))),
            repeat,
        ),
        (
            "QueryTelemetry 100,000 rows x5 fields (10 pages)",
            query_rpc,
            query_sql,
            max(5, repeat // 2),
        ),
    ]
    out = []
    for name, rpc, direct, n in cases:
        out.append((name, *await paired_ms(rpc, direct, n)))
    await conn.close()
    await channel.close()
    return out


def start_serve(db: Any, port: int, home: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "LIFEBOX_DATABASE_URL": db.app_dsn,
        "LIFEBOX_OWNER_DATABASE_URL": db.owner_dsn,
        "LIFEBOX_INGEST_DATABASE_URL": db.ingest_dsn,
        "LIFEBOX_MQTT_URL": "mqtt://127.0.0.1:1",  # serve never connects to the broker
        "LIFEBOX_GRPC_PORT": str(port),
        "LIFEBOX_HTTP_PORT": str(free_port()),
        "LIFEBOX_JWT_SIGNING_KEY": "bench-signing-key-" + "k" * 40,
        "LIFEBOX_HOME": str(home),
        "LIFEBOX_LOG_LEVEL": os.environ.get("LIFEBOX_LOG_LEVEL", "WARNING"),
    }
    return subprocess.Popen([sys.executable, "-m", "lifebox_grpc.cli", "serve"], env=env)


async def sign_in(target: str) -> str:
    channel = grpc.aio.insecure_channel(target)
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + 60
    while True:
        try:
            reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=2)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                break
        except grpc.aio.AioRpcError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("serve did not become SERVING")
        await asyncio.sleep(0.2)
    login = await auth_pb2_grpc.AuthServiceStub(channel).Login(
        auth_pb2.LoginRequest(email="bench@lifebox.local", password=PASSWORD)
    )
    await channel.close()
    return str(login.tokens.access_token)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--procs", type=int, default=2, help="load processes")
    parser.add_argument("--concurrency", type=int, default=32, help="in flight per process")
    parser.add_argument(
        "--serve-procs", type=int, default=1, help="serve processes sharing the port"
    )
    parser.add_argument("--repeat", type=int, default=15, help="runs per telemetry case")
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternating rounds of Check, GetMe, GetDevice"
    )
    parser.add_argument(
        "--client",
        choices=("both", "python", "rust"),
        default="both",
        help="unary load from Python grpc.aio processes, Rust tonic ones, or both",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    parser.add_argument("--method", help=argparse.SUPPRESS)
    parser.add_argument("--devices", default="", help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        asyncio.run(_worker(args))
        return

    # The throwaway cluster of the test suite (tests/ sits beside this folder).
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.helpers.services import running_database

    clients = [("Python grpc.aio load client", PYTHON_CLIENT)]
    if args.client in ("both", "rust") and (rust := rust_client()) is not None:
        clients = [*(clients if args.client == "both" else []), ("Rust tonic load client", rust)]
    with running_database() as db:
        print("loading data (1,000 devices, 1.3 M readings)...", file=sys.stderr)
        began = time.perf_counter()
        data = asyncio.run(load_data(db.owner_dsn))
        asyncio.run(checkpoint(db.superuser_dsn))
        print(f"  loaded in {time.perf_counter() - began:.0f}s", file=sys.stderr)
        port = free_port()
        target = f"127.0.0.1:{port}"
        with tempfile.TemporaryDirectory(prefix="lifebox-bench-") as home:
            serves = [start_serve(db, port, Path(home)) for _ in range(args.serve_procs)]
            try:
                token = asyncio.run(sign_in(target))
                ids = [str(d) for d in data["ids"]]
                load = (args.procs, args.seconds, args.concurrency, ids)
                rounds = alternating_rounds(
                    target, token, load, args.rounds, [client for _, client in clients]
                )
                unary = []
                for (label, client), (check, me, get) in zip(clients, rounds, strict=True):
                    # Half of this client's own maximum: the latency the issue asks for.
                    rate = get["rps"] / 2
                    half = run_load(target, token, "get_device", *load, rate=rate, client=client)
                    unary.append((label, check, me, get, half))
                tele = asyncio.run(telemetry_figures(target, token, db.app_dsn, data, args.repeat))
            finally:
                for serve in serves:
                    serve.terminate()
                for serve in serves:
                    serve.wait(30)
    report(args, unary, tele)


def report(
    args: argparse.Namespace,
    unary: list[tuple[str, dict[str, float], dict[str, float], dict[str, float], dict[str, float]]],
    tele: list[tuple[str, float, float, float]],
) -> None:
    cores = os.cpu_count()
    print(
        f"\nLifeBox API, {args.serve_procs} serve process(es), {args.procs} load processes x "
        f"{args.concurrency} in flight, {args.rounds} rounds of {args.seconds:.0f}s, {cores} "
        "cores, auth + RLS on"
    )
    for label, check, me, get, half in unary:
        print(f"\n{label:52} {'req/s':>9} {'of (0)':>8} {'p50 ms':>8} {'p99 ms':>8}")
        rows = [
            ("(0) health Check (ceiling)", check),
            ("GetMe (token + principal, cached)", me),
            ("GetDevice, closed loop", get),
            (f"GetDevice at half its max ({get['rps'] / 2:.0f}/s)", half),
        ]
        for name, r in rows:
            share = f"{100 * r.get('share', r['rps'] / check['rps']):.0f} %"
            print(f"{name:52} {r['rps']:9.0f} {share:>8} {r['p50']:8.2f} {r['p99']:8.2f}")
    print(f"\n{'':52} {'RPC ms':>9} {'SQL ms':>8} {'ratio':>8}")
    for name, rpc_ms, sql_ms, ratio in tele:
        print(f"{name:52} {rpc_ms:9.1f} {sql_ms:8.1f} {ratio:7.2f}x")
    print(
        "\nUnary rows: the median of the rounds (of (0): the median of each round's share). "
        "The Rust client costs a tenth of the Python one's CPU, so the server gets the cores. "
        "Telemetry: RPC and SQL run in turns; medians, and the median of each pair's ratio; "
        "SQL = the store's statement through asyncpg in the same tenant transaction (RLS on), "
        "no gRPC, no protobuf, no auth."
    )
    print(
        "Multi-process: serve binds with SO_REUSEPORT, so N `serve` processes (or replicas "
        "behind a balancer) on one port split the connections, and each holds one LISTEN "
        "connection for its streams and one for principal-cache invalidation. Unary rates are "
        "CPU-bound in Python (principals are cached for principal_cache_seconds and emptied "
        "by NOTIFY, and a GetDevice is one statement that sets its own tenant scope: one round "
        "trip), so they grow with processes only while cores are free; on this 2-core machine "
        "the load client already takes one."
    )


if __name__ == "__main__":
    main()
