"""Hostile topics: the serial level is checked before any cache, lookup or table, and rejects
for messages that name no device are capped per worker and interval, counted and summed up.

A real `lifebox ingest` process, the real broker and database, as in tests/test_ingest.py.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import grpc
import pytest

from lifebox.v1 import devices_pb2, devices_pb2_grpc
from lifebox_grpc.ingest.devices import DeviceDirectory
from lifebox_grpc.ingest.topics import ParsedTopic, _parse, parse_topic
from lifebox_grpc.runtime.mosquitto import EmbeddedMosquitto
from lifebox_grpc.serials import MAX_SERIAL, is_valid_serial
from lifebox_grpc.store.pool import tenant_transaction
from tests.helpers.grpc import Server, make_tenant, violations
from tests.helpers.ingest import IngestProcess, Publisher, publisher, register_fleet, running_ingest
from tests.helpers.services import Database
from tests.helpers.wait import async_wait_until

pytestmark = pytest.mark.timeout(300)

SUMMARY = "suppressed_rejects"
STORED_TOPIC_CHARS = 256


@pytest.fixture
async def staff(database: Database) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database.owner_dsn)
    yield conn
    await conn.close()


async def staff_fetch(conn: asyncpg.Connection, sql: str, *args: object) -> list[asyncpg.Record]:
    async with tenant_transaction(conn, None, staff=True):
        return list(await conn.fetch(sql, *args))


async def metric(worker: IngestProcess, name: str) -> float:
    return await asyncio.to_thread(worker.metric, name)


async def wait_metric(worker: IngestProcess, name: str, expected: float, timeout: float) -> None:
    async def reached() -> bool:
        return await metric(worker, name) >= expected

    await async_wait_until(reached, timeout, f"{name} >= {expected}")


def reading(serial: str, value: float) -> tuple[str, bytes]:
    return f"lifebox/v1/{serial}/telemetry", json.dumps({"voltage_l1": value}).encode()


async def summaries(conn: asyncpg.Connection, worker: IngestProcess) -> list[dict[str, object]]:
    """The summary rows one worker stored: what each says was counted but not stored."""
    rows = await staff_fetch(
        conn,
        "SELECT client_id, serial, topic, received_at, reason, raw FROM ingest_rejects "
        "WHERE code = $1 AND convert_from(raw, 'UTF8')::jsonb ->> 'worker' = $2",
        SUMMARY,
        worker.client_id,
    )
    return [{**dict(r), "body": json.loads(bytes(r["raw"]))} for r in rows]


def summed(rows: list[dict[str, object]], reason: str) -> int:
    return sum(int(r["body"]["not_stored"].get(reason, 0)) for r in rows)  # type: ignore[index]


def windows(start: float, end: float, interval: float) -> int:
    """How many cap intervals (aligned to the wall clock) [start, end] touches."""
    return math.floor(end / interval) - math.floor(start / interval) + 1


# -- the grammar ---------------------------------------------------------------------------

CANDIDATES = [
    "A", "z", "0", "A" * MAX_SERIAL, "A" * (MAX_SERIAL + 1), "", "-A", "_A", ".A", ":A",
    "Pump-01_a.b:c", "a b", "a/b", "a+b", "a#b", "a$b", "a\x00b", "é", "\uff211", "٣", "ABC\n",
    "\nABC", "A\tB", "A" * 63 + "é", "A" * 60_000,
]  # fmt: skip


async def test_the_topic_serial_grammar_is_the_devices_check(
    owner_conn: asyncpg.Connection,
) -> None:
    definition = await owner_conn.fetchval(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = 'devices'::regclass AND contype = 'c' "
        "AND pg_get_constraintdef(oid) LIKE '%serial ~%'"
    )
    found = re.search(r"serial ~ '(.+)'::text", definition)
    assert found, definition
    for candidate in CANDIDATES:
        checked = await owner_conn.fetchval(
            "SELECT $1::text ~ $2", candidate.replace("\x00", "?"), found.group(1)
        )
        expected = bool(checked) and "\x00" not in candidate
        assert is_valid_serial(candidate) is expected, repr(candidate[:80])


COMMAND = uuid.uuid4()
TOPICS: list[tuple[str, str, str]] = [  # topic, kind or reject code, serial stored
    ("lifebox/v1/Pump-1/telemetry", "telemetry", "Pump-1"),
    ("lifebox/v1/Pump-1/alarms", "alarm", "Pump-1"),
    (f"lifebox/v1/Pump-1/commands/{COMMAND}/ack", "ack", "Pump-1"),
    ("lifebox/v1/Pump$1/telemetry", "invalid_serial", "Pump$1"),
    ("lifebox/v1//telemetry", "invalid_serial", ""),
    (f"lifebox/v1/{'A' * 65}/telemetry", "invalid_serial", "A" * 64),
    (f"lifebox/v1/{'A' * 60_000}/alarms", "invalid_serial", "A" * 64),
    (f"lifebox/v1/Pump-1/commands/{'-' * 500}{COMMAND.hex}/ack", "unknown_topic", "Pump-1"),
    ("lifebox/v1/Pump-1/whatever", "unknown_topic", "Pump-1"),
    ("elsewhere/Pump-1/telemetry", "unknown_topic", ""),
]


def test_topics_are_classified_and_long_ones_never_enter_the_cache() -> None:
    for topic, expected, serial in TOPICS:
        parsed = parse_topic(topic)
        kind = parsed.kind.value if isinstance(parsed, ParsedTopic) else parsed.code
        assert (kind, parsed.serial) == (expected, serial), topic[:80]
    cached = _parse.cache_info().currsize
    for i in range(100):
        parse_topic(f"lifebox/v1/{i}{'A' * 60_000}/telemetry")
    assert _parse.cache_info().currsize == cached


# -- the unknown-serial cache --------------------------------------------------------------


async def test_the_unknown_serial_cache_is_bounded_least_recently_used_out(
    database: Database,
) -> None:
    fleet = await register_fleet(database.owner_dsn, 1)
    _, serial = fleet.devices[0]
    tag = f"C{secrets.token_hex(5)}"
    directory = DeviceDirectory(max_unknown=100)
    conn = await asyncpg.connect(database.ingest_dsn)
    try:
        assert (await directory.resolve(conn, [serial]))[serial] is not None
        for start, count in ((0, 300), (300, 300), (600, 300), (900, 100)):
            names = [f"{tag}-{i}" for i in range(start, start + count)]
            assert set((await directory.resolve(conn, names)).values()) == {None}
        assert directory.unknown_cached == 100
    finally:
        await conn.close()
    # Answered from the cache alone (the connection is closed): the known device, and the
    # last 100 unknown serials...
    cached = await directory.resolve(conn, [serial, f"{tag}-999"])
    assert cached[serial] is not None
    assert cached[f"{tag}-999"] is None
    # ...while the oldest unknown one was let go and needs the database again.
    with pytest.raises(asyncpg.InterfaceError):
        await directory.resolve(conn, [f"{tag}-0"])


# -- end to end ----------------------------------------------------------------------------


async def test_a_malformed_serial_is_a_logged_reject_with_a_truncated_topic_and_its_batch_commits(
    database: Database, broker: EmbeddedMosquitto, staff: asyncpg.Connection, tmp_path: Path
) -> None:
    fleet = await register_fleet(database.owner_dsn, 1)
    device_id, serial = fleet.devices[0]
    tag = f"H{secrets.token_hex(5)}"
    hostile = [
        # 60,000 random characters of the serial alphabet: too long for a serial (and for
        # a btree index entry, were it stored whole).
        (f"lifebox/v1/{tag}{secrets.token_hex(30_000)[: 60_000 - len(tag)]}/telemetry", b"{}"),
        (f"lifebox/v1/{tag}$bad/telemetry", b"{}"),
        (f"lifebox/v1/{tag}-\u00e9/alarms", b'{"code": "X"}'),
    ]
    log_path = tmp_path / "ingest.log"
    with (
        running_ingest(database, broker.url, broker.port, log_path) as worker,
        publisher(broker.port) as pub,
    ):
        pub.publish_all([reading(serial, 1), *hostile, reading(serial, 2)])
        await wait_metric(worker, 'lifebox_ingest_rejects_total{reason="invalid_serial"}', 3, 60)

        async def committed() -> bool:
            rows = await staff_fetch(
                staff, "SELECT count(*) FROM telemetry_events WHERE device_id = $1", device_id
            )
            return bool(rows[0][0] == 2)

        await async_wait_until(committed, 60, "both good readings")
    rejects = await staff_fetch(
        staff,
        "SELECT serial, topic, code, client_id, raw FROM ingest_rejects WHERE serial LIKE $1",
        f"{tag}%",
    )
    assert sorted(r["code"] for r in rejects) == ["invalid_serial"] * 3
    assert all(r["client_id"] is None for r in rejects)
    assert all(len(r["serial"]) <= MAX_SERIAL for r in rejects)
    assert all(len(r["topic"]) <= STORED_TOPIC_CHARS for r in rejects)
    long_one = next(r for r in rejects if len(r["topic"]) == STORED_TOPIC_CHARS)
    assert hostile[0][0].startswith(long_one["topic"])
    assert {bytes(r["raw"]) for r in rejects} == {b"{}", b'{"code": "X"}'}
    log = log_path.read_text(errors="replace")
    assert "invalid_serial" in log
    assert max(len(line) for line in log.splitlines()) < 2_000, "a log line carries the topic"


async def test_unknown_serial_rejects_past_the_cap_are_counted_and_summed_up_each_interval(
    database: Database, broker: EmbeddedMosquitto, staff: asyncpg.Connection
) -> None:
    fleet = await register_fleet(database.owner_dsn, 1)
    device_id, serial = fleet.devices[0]
    tag = f"U{secrets.token_hex(5)}"
    unknown = [reading(f"{tag}-{i}", i) for i in range(20)]
    own_bad = [(f"lifebox/v1/{serial}/telemetry", b"{not json")] * 5
    cap, interval = 3, 1
    with (
        running_ingest(
            database,
            broker.url,
            broker.port,
            LIFEBOX_INGEST_UNKNOWN_REJECTS_PER_INTERVAL=str(cap),
            LIFEBOX_INGEST_UNKNOWN_REJECTS_INTERVAL_S=str(interval),
        ) as worker,
        publisher(broker.port) as pub,
    ):
        started = time.time()
        pub.publish_all([*unknown, *own_bad, reading(serial, 1)])
        await wait_metric(worker, 'lifebox_ingest_rejects_total{reason="unknown_device"}', 20, 60)

        async def all_accounted_for() -> tuple[int, list[dict[str, object]]] | None:
            stored = await staff_fetch(
                staff, "SELECT count(*) FROM ingest_rejects WHERE serial LIKE $1", f"{tag}-%"
            )
            rows = await summaries(staff, worker)
            individual = int(stored[0][0])
            return (individual, rows) if individual + summed(rows, "unknown_device") == 20 else None

        # Written by the worker when each interval ends, while it runs.
        individual, rows = await async_wait_until(all_accounted_for, 60, "the interval's summary")
        not_stored = await metric(worker, "lifebox_ingest_rejects_not_stored_total")
        finished = time.time()
    assert cap <= individual <= cap * windows(started, finished, interval)
    assert not_stored == 20 - individual
    assert 1 <= len(rows) <= windows(started, finished, interval)
    for row in rows:
        assert row["client_id"] is None
        assert row["serial"] == row["topic"] == ""
        assert row["received_at"].timestamp() % interval == 0  # type: ignore[attr-defined]
        assert "unknown_device" in str(row["reason"])
        assert row["body"]["cap"] == cap  # type: ignore[index]
    # A tenant's own device is never capped: all its rejects and its reading are stored.
    own = await staff_fetch(
        staff, "SELECT count(*) FROM ingest_rejects WHERE serial = $1 AND code = 'invalid_json'",
        serial,
    )  # fmt: skip
    assert own[0][0] == 5
    rows_in = await staff_fetch(
        staff, "SELECT count(*) FROM telemetry_events WHERE device_id = $1", device_id
    )
    assert rows_in[0][0] == 1


FLOOD = 70_000
WARM_UP = 1_000
SERIAL_CHARS = 60_000
CHUNK = 5_000
AHEAD = 10_000  # messages the broker may hold for the worker beyond what it has counted


def flood_topics(tag: str, start: int, count: int, block: str) -> list[tuple[str, bytes]]:
    """Distinct serials of 60,000 random characters (hex: the serial alphabet, so only the
    length is wrong): a per-message number, then a window of one random block."""
    width = SERIAL_CHARS - len(tag) - 6
    span = len(block) - width
    return [
        (f"lifebox/v1/{tag}{i:06d}{block[(i * 7919) % span :][:width]}/telemetry", b"{}")
        for i in range(start, start + count)
    ]


async def publish_paced(
    pub: Publisher, worker: IngestProcess, tag: str, start: int, count: int, block: str
) -> None:
    counted = 'lifebox_ingest_rejects_total{reason="invalid_serial"}'
    for offset in range(0, count, CHUNK):
        # Keep the broker's queue for the worker bounded (each message is 60 kB).
        await wait_metric(worker, counted, start + offset - AHEAD, 120)
        chunk = flood_topics(tag, start + offset, min(CHUNK, count - offset), block)
        await asyncio.to_thread(pub.publish_all, chunk)
    await wait_metric(worker, counted, start + count, 120)


async def test_70k_messages_on_random_60k_character_serials_keep_the_worker_flat(
    database: Database, broker: EmbeddedMosquitto, staff: asyncpg.Connection
) -> None:
    fleet = await register_fleet(database.owner_dsn, 1)
    device_id, serial = fleet.devices[0]
    tag = f"F{secrets.token_hex(4)}"
    block = secrets.token_hex(SERIAL_CHARS)  # 120,000 random hex characters
    cap = 500
    started = time.time()
    with (
        running_ingest(
            database, broker.url, broker.port, LIFEBOX_INGEST_UNKNOWN_REJECTS_PER_INTERVAL=str(cap)
        ) as worker,
        publisher(broker.port) as pub,
    ):
        await publish_paced(pub, worker, tag, 0, WARM_UP, block)
        before = worker.rss_bytes()
        await publish_paced(pub, worker, tag, WARM_UP, FLOOD, block)
        after = worker.rss_bytes()
        # The worker still takes readings after the flood.
        await asyncio.to_thread(pub.publish_all, [reading(serial, 1)])

        async def committed() -> bool:
            rows = await staff_fetch(
                staff, "SELECT count(*) FROM telemetry_events WHERE device_id = $1", device_id
            )
            return bool(rows[0][0] == 1)

        await async_wait_until(committed, 60, "the reading after the flood")
    # The worker has stopped: its last summary is stored.
    finished = time.time()
    grown_mb = (after - before) / 2**20
    assert grown_mb < 50, f"RSS grew by {grown_mb:.1f} MB over {FLOOD} hostile messages"
    spanned = windows(started, finished, 60)
    stored = await staff_fetch(
        staff, "SELECT count(*) FROM ingest_rejects WHERE serial LIKE $1", f"{tag}%"
    )
    rows = await summaries(staff, worker)
    assert stored[0][0] <= cap * spanned
    assert len(rows) <= spanned
    assert stored[0][0] + summed(rows, "invalid_serial") == WARM_UP + FLOOD


# -- the same grammar at the API -------------------------------------------------------------


async def test_the_api_refuses_a_serial_the_devices_check_would(
    grpc_server: Server, owner_conn: asyncpg.Connection
) -> None:
    """A trailing newline passed the API's old '^…$' pattern and then failed the CHECK."""
    tenant = await make_tenant(grpc_server, owner_conn)
    api = devices_pb2_grpc.DeviceServiceStub(grpc_server.channel)
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await api.CreateDevice(
            devices_pb2.CreateDeviceRequest(
                device=devices_pb2.Device(serial=f"N{secrets.token_hex(4)}\n", name="Pump")
            ),
            metadata=tenant.users["client"].md,
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(violations(bad.value)) == {"device.serial"}
