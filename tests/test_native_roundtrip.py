"""The native COPY buffer through the real PostgreSQL: what is accepted comes back exactly.

Readings are encoded by ``lifebox_grpc.native``, COPYed into ``telemetry_events`` as the ingest
role (as the ingest service does), read back as the owner on the staff path and compared field
by field with what the device sent.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lifebox_grpc.native import COLUMN_TYPES, COLUMNS, DecodeLimits, Decoder
from lifebox_grpc.store.pool import tenant_transaction
from tests.helpers.factories import make_client, make_device
from tests.helpers.services import Database

KINDS = {"double precision": "f", "bigint": "i", "boolean": "b", "text": "t"}
FIELDS: dict[str, str] = {name: KINDS[t] for name, t in COLUMN_TYPES[3:-1]}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
INT64 = (-(2**63), 2**63 - 1)
IST = timezone(timedelta(hours=5, minutes=30))
PST = timezone(-timedelta(hours=8))


@dataclass(frozen=True)
class Fleet:
    client_id: uuid.UUID
    devices: tuple[uuid.UUID, ...]


@pytest.fixture(scope="module")
async def fleet(database: Database) -> Fleet:
    conn = await asyncpg.connect(database.owner_dsn)
    try:
        client_id = await make_client(conn)
        devices = [(await make_device(conn, client_id))[0] for _ in range(3)]
    finally:
        await conn.close()
    return Fleet(client_id, tuple(devices))


@pytest.fixture
async def ingest_conn(database: Database) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database.ingest_dsn)
    yield conn
    await conn.close()


def now_us() -> int:
    return time.time_ns() // 1000


def utc(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def expected_time(reading: dict[str, Any], received_us: int) -> datetime:
    ts = reading.get("ts")
    if ts is None:
        return utc(received_us)
    if isinstance(ts, int):
        return utc(ts * 1000)
    return datetime.fromisoformat(ts).astimezone(UTC)


def same_value(kind: str, sent: Any, stored: Any) -> bool:
    if sent is None:
        return stored is None
    if kind == "f":
        # Bit-exact, so -0.0 must stay negative and no float may be rounded.
        return (
            isinstance(stored, float)
            and stored == float(sent)
            and math.copysign(1.0, stored) == math.copysign(1.0, float(sent))
        )
    return bool(type(stored) is type(sent) and stored == sent)


async def copy_and_read(
    ingest_conn: asyncpg.Connection,
    owner_dsn: str,
    copy_data: bytes,
    device_ids: Sequence[uuid.UUID],
) -> dict[tuple[uuid.UUID, datetime], asyncpg.Record]:
    await ingest_conn.copy_to_table(
        "telemetry_events", source=io.BytesIO(copy_data), columns=list(COLUMNS), format="binary"
    )
    owner = await asyncpg.connect(owner_dsn)
    try:
        async with tenant_transaction(owner, None, staff=True):
            rows = await owner.fetch(
                "SELECT * FROM telemetry_events WHERE device_id = ANY($1::uuid[])", device_ids
            )
    finally:
        await owner.close()
    return {(r["device_id"], r["time"]): r for r in rows}


def as_decimals(text: str) -> Any:
    return json.loads(text, parse_float=Decimal, parse_int=Decimal)


def assert_row_matches(
    row: asyncpg.Record, reading: dict[str, Any], device: uuid.UUID, client: uuid.UUID
) -> None:
    assert row["device_id"] == device
    assert row["client_id"] == client
    for name, kind in FIELDS.items():
        assert same_value(kind, reading.get(name), row[name]), (name, reading.get(name), row[name])
    unknown = {k: v for k, v in reading.items() if k != "ts" and k not in FIELDS}
    if unknown:
        # jsonb keeps numbers as numeric (2.5e+16 comes back as 25000000000000000): compare
        # decimal values, which must be exact.
        assert as_decimals(row["extra"]) == as_decimals(json.dumps(unknown))
    else:
        assert row["extra"] is None


def edge_corpus(base_ms: int) -> list[list[dict[str, Any]]]:
    """Messages (each a list of readings; a one-element list is sent as a bare object)."""
    everything: dict[str, Any] = {"ts": base_ms}
    for i, (name, kind) in enumerate(FIELDS.items()):
        everything[name] = {"f": 1.5 + i, "i": i, "b": i % 2 == 0, "t": f"v{i}"}[kind]
    off = datetime.fromtimestamp(base_ms / 1000, UTC)
    return [
        [everything],
        [
            {
                "ts": base_ms + 1,
                "voltage_l1": -0.0,
                "voltage_l2": 5e-324,
                "voltage_l3": 1.7976931348623157e308,
                "current_l1": 0.1,
                "temperature_c": -40,
                "uptime_s": INT64[0],
                "packet_seq": INT64[1],
                "relay_on": False,
                "status": "ünïcødé ✓ 😀 中文",
                "firmware_version": "",
                "humidity_pct": None,
            }
        ],
        [{"ts": base_ms + 2, "extra_empty_object": {}, "extra_empty_list": []}],
        [
            {
                "ts": base_ms + 3,
                "gps": {"fix": [1, 2.5, {"deep": [[[[[True]]]]]}], "ok": None},
                "note": 'quote " backslash \\ tab \t nl \n ✓',
                "big": 123456789012345678901234567890,
                "neg": -1.25e-10,
            }
        ],
        [
            {"ts": (off + timedelta(seconds=1)).astimezone(IST).isoformat(), "packet_seq": 1},
            {"ts": (off + timedelta(seconds=2)).isoformat().replace("+00:00", "Z")},
            {"ts": (off + timedelta(seconds=3, microseconds=123456)).astimezone(PST).isoformat()},
            {"ts": (off + timedelta(seconds=4, milliseconds=5)).astimezone(IST).isoformat()},
        ],
        [{"ts": base_ms + 10_000 + i, "packet_seq": i} for i in range(1000)],
    ]


async def test_edge_values_round_trip_through_postgresql(
    database: Database, fleet: Fleet, ingest_conn: asyncpg.Connection
) -> None:
    received = now_us()
    base_ms = received // 1000 - 3_600_000
    corpus = edge_corpus(base_ms)
    device = fleet.devices[0]
    messages = [
        (device, fleet.client_id, received, json.dumps(m[0] if len(m) == 1 else m).encode())
        for m in corpus
    ]
    # The same corpus once more without ASCII escapes, for another device.
    other = fleet.devices[1]
    messages += [
        (other, fleet.client_id, received, json.dumps(m, ensure_ascii=False).encode())
        for m in corpus
    ]
    batch = Decoder().decode(messages, now_us=received)
    assert batch.rejects == []
    sent = [r for m in corpus for r in m]
    assert batch.rows == 2 * len(sent)
    assert batch.rows_per_message == [len(m) for m in corpus] * 2

    stored = await copy_and_read(ingest_conn, database.owner_dsn, batch.copy_data, [device, other])
    assert len(stored) == batch.rows
    for dev in (device, other):
        for reading in sent:
            row = stored[(dev, expected_time(reading, received))]
            assert_row_matches(row, reading, dev, fleet.client_id)
    assert batch.latest_us == {
        device: (base_ms + 10_999) * 1000,
        other: (base_ms + 10_999) * 1000,
    }


async def test_rejected_readings_leave_the_rest_of_the_batch_intact(
    database: Database, fleet: Fleet, ingest_conn: asyncpg.Connection
) -> None:
    received = now_us()
    base_ms = received // 1000 - 7_200_000
    device = fleet.devices[2]
    good = [{"ts": base_ms + i, "voltage_l1": float(i)} for i in range(3)]
    payloads = [
        json.dumps([good[0], {"ts": base_ms + 100, "voltage_l1": "230"}, good[1]]).encode(),
        b'{"voltage_l1": NaN}',
        b"\xff\xfe",
        json.dumps({"ts": "1999-01-01T00:00:00Z"}).encode(),
        json.dumps(good[2]).encode(),
    ]
    batch = Decoder().decode(
        [(device, fleet.client_id, received, p) for p in payloads], now_us=received
    )
    assert [(r.message_index, r.reading_index, r.code) for r in batch.rejects] == [
        (0, 1, "type_error"),
        (1, None, "invalid_json"),
        (2, None, "invalid_utf8"),
        (3, 0, "ts_out_of_range"),
    ]
    assert batch.rejects[3].reason.startswith("ts 1999-01-01T00:00:00Z out of range")
    stored = await copy_and_read(ingest_conn, database.owner_dsn, batch.copy_data, [device])
    for reading in good:
        assert_row_matches(
            stored[(device, expected_time(reading, received))], reading, device, fleet.client_id
        )


async def test_migrated_table_matches_the_encoder_columns(owner_conn: asyncpg.Connection) -> None:
    rows = await owner_conn.fetch(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'public' AND table_name = 'telemetry_events' "
        "ORDER BY ordinal_position"
    )
    assert tuple((r["column_name"], r["data_type"]) for r in rows) == COLUMN_TYPES


# --- property: whatever is accepted round-trips exactly; whatever is rejected has a reason ---

finite = st.floats(allow_nan=False, allow_infinity=False)
text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40
)
json_scalars = st.none() | st.booleans() | st.integers(*INT64) | finite | text
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)
VALID = {
    "f": st.none() | finite | st.integers(-(2**53), 2**53),
    "i": st.none() | st.integers(*INT64),
    "b": st.none() | st.booleans(),
    "t": st.none() | text,
}
# A wrong value for each kind: a type error for that reading only.
WRONG = {
    "f": text | st.booleans(),
    "i": st.floats(0.1, 0.9) | text,
    "b": st.integers() | text,
    "t": finite | st.booleans(),
}


@st.composite
def readings(draw: st.DrawFn, base_ms: int) -> dict[str, Any]:
    reading: dict[str, Any] = {}
    if draw(st.booleans()):
        reading["ts"] = base_ms + draw(st.integers(0, 10_000_000))
    for name in draw(st.lists(st.sampled_from(sorted(FIELDS)), unique=True, max_size=8)):
        pool = WRONG if draw(st.integers(0, 9)) == 0 else VALID
        reading[name] = draw(pool[FIELDS[name]])
    extra = draw(
        st.dictionaries(
            text.filter(
                lambda k: (
                    k not in FIELDS and k not in ("ts", "time", "device_id", "client_id", "extra")
                )
            ),
            json_values,
            max_size=3,
        )
    )
    reading.update(extra)
    return reading


def depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    return 0


def accepted_alone(reading: dict[str, Any]) -> bool:
    """Whether the contract accepts this reading, judged independently of the decoder."""
    extra = [v for k, v in reading.items() if k != "ts" and k not in FIELDS]
    if any(depth(v) > DecodeLimits().max_depth for v in extra):
        return False
    for name, kind in FIELDS.items():
        value = reading.get(name)
        if value is None:
            continue
        ok = {
            "f": type(value) in (int, float),
            "i": type(value) is int,
            "b": type(value) is bool,
            "t": type(value) is str and len(value.encode()) <= 1024,
        }[kind]
        if not ok:
            return False
    return True


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_accepted_readings_round_trip_and_rejects_have_reasons(
    database: Database, fleet: Fleet, data: st.DataObject
) -> None:
    received = now_us()
    base_ms = received // 1000 - 20_000_000
    batch_readings = data.draw(st.lists(readings(base_ms), min_size=1, max_size=6))
    as_array = data.draw(st.booleans())
    if as_array:
        payloads = [json.dumps(batch_readings).encode()]
    else:
        payloads = [json.dumps(r).encode() for r in batch_readings]
    batch = Decoder(DecodeLimits()).decode(
        [(fleet.devices[0], fleet.client_id, received, p) for p in payloads], now_us=received
    )
    for reject in batch.rejects:
        assert reject.code
        assert reject.reason
    rejected = {
        (r.message_index, r.reading_index) if not as_array else (0, r.reading_index)
        for r in batch.rejects
    }
    expected: list[dict[str, Any]] = []
    seen_times: set[datetime] = set()
    for i, reading in enumerate(batch_readings):
        key = (0, i) if as_array else (i, 0)
        t = expected_time(reading, received)
        ok = accepted_alone(reading) and t not in seen_times
        assert (key not in rejected) == ok, (reading, batch.rejects)
        if ok:
            seen_times.add(t)
            expected.append(reading)
    assert batch.rows == len(expected)

    async def check() -> None:
        ingest = await asyncpg.connect(database.ingest_dsn)
        try:
            # A fresh device per example keeps examples apart in the table.
            dev = await fresh_device(database, fleet.client_id)
            rebound = Decoder().decode(
                [(dev, fleet.client_id, received, p) for p in payloads], now_us=received
            )
            stored = await copy_and_read(ingest, database.owner_dsn, rebound.copy_data, [dev])
            assert len(stored) == len(expected)
            for reading in expected:
                row = stored[(dev, expected_time(reading, received))]
                assert_row_matches(row, reading, dev, fleet.client_id)
        finally:
            await ingest.close()

    asyncio.run(check())


async def fresh_device(database: Database, client_id: uuid.UUID) -> uuid.UUID:
    conn = await asyncpg.connect(database.owner_dsn)
    try:
        return (await make_device(conn, client_id))[0]
    finally:
        await conn.close()
