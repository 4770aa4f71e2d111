"""The Python boundary of the native core: types, exceptions, the GIL released in decode."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import threading
import time
import uuid

import pytest

from lifebox_grpc import native
from lifebox_grpc.native import (
    COLUMN_TYPES,
    COLUMNS,
    DecodedBatch,
    DecodeLimits,
    Decoder,
    LimitsError,
    NativeError,
    Reject,
    UnknownField,
)

DEVICE = uuid.UUID("11111111-1111-4111-8111-111111111111")
CLIENT = uuid.UUID("22222222-2222-4222-8222-222222222222")
NOW_US = 1_700_000_000_000_000


def test_columns_come_from_the_one_rust_definition() -> None:
    assert COLUMNS[:3] == ("time", "device_id", "client_id")
    assert COLUMNS[-1] == "extra"
    assert len(COLUMNS) == 41
    assert tuple(name for name, _ in COLUMN_TYPES) == COLUMNS
    assert ("voltage_l1", "double precision") in COLUMN_TYPES
    assert ("uptime_s", "bigint") in COLUMN_TYPES
    assert ("relay_on", "boolean") in COLUMN_TYPES
    assert ("status", "text") in COLUMN_TYPES
    assert native.version() == "0.1.0"


def test_a_batch_comes_back_as_typed_python_values() -> None:
    payloads = [
        json.dumps({"ts": 1_700_000_000_000, "voltage_l1": 1, "mood": "ok"}).encode(),
        json.dumps([{"ts": 1_699_999_999_000}, {"voltage_l1": "x"}]).encode(),
        b"not json",
    ]
    batch = Decoder().decode([(DEVICE, CLIENT, NOW_US, p) for p in payloads], now_us=NOW_US)
    assert isinstance(batch, DecodedBatch)
    assert batch.rows == 2
    assert batch.rows_per_message == [1, 1, 0]
    assert batch.copy_data.startswith(b"PGCOPY\n\xff\r\n\x00")
    assert batch.copy_data.endswith(b"\xff\xff")
    assert batch.rejects == [
        Reject(1, 1, "type_error", "field voltage_l1: expected number, got string"),
        Reject(2, None, "invalid_json", "invalid JSON at byte 0: expected a value"),
    ]
    assert batch.unknown_fields == [UnknownField(CLIENT, DEVICE, "mood", "string", 1, '"ok"')]
    assert batch.latest_us == {DEVICE: 1_700_000_000_000_000}
    assert next(iter(batch.latest_us)) is DEVICE, "keyed by the caller's own object"
    assert struct.unpack("<2q", batch.row_times_us) == (
        1_700_000_000_000_000,
        1_699_999_999_000_000,
    )


def test_ids_are_read_per_object_whatever_their_form() -> None:
    """Equal ids in distinct objects, bytes ids, and objects repeated across a batch all land
    in the right rows (the boundary reads each distinct object once)."""
    other = uuid.UUID("33333333-3333-4333-8333-333333333333")
    twin = uuid.UUID(str(DEVICE))  # equal to DEVICE, another object
    ids = [DEVICE, other, twin, DEVICE.bytes, other.bytes, DEVICE, other]
    base_ms = NOW_US // 1000 - 60_000
    messages = [
        (device, CLIENT if i % 2 else CLIENT.bytes, NOW_US, b'{"ts": %d}' % (base_ms + i))
        for i, device in enumerate(ids)
    ]
    batch = Decoder().decode(messages, now_us=NOW_US)  # type: ignore[arg-type]
    assert batch.rejects == []
    # All-NULL readings make fixed-size tuples after the 19-byte header: field count, time,
    # device and client ids (length + value each), then 38 NULLs.
    size = 2 + (4 + 8) + 2 * (4 + 16) + 38 * 4
    device_at = [19 + row * size + 2 + 12 + 4 for row in range(batch.rows)]
    client_at = [at + 20 for at in device_at]
    expected = [d if isinstance(d, bytes) else d.bytes for d in ids]
    assert [batch.copy_data[at : at + 16] for at in device_at] == expected
    assert {batch.copy_data[at : at + 16] for at in client_at} == {CLIENT.bytes}
    assert batch.latest_us == {DEVICE: (base_ms + 5) * 1000, other: (base_ms + 6) * 1000}


def test_now_defaults_to_the_clock() -> None:
    received = time.time_ns() // 1000
    batch = Decoder().decode([(DEVICE, CLIENT, received, b"{}")])
    assert batch.rows == 1
    assert batch.rejects == []


@pytest.mark.parametrize(
    "limits",
    [
        DecodeLimits(max_payload_bytes=0),
        DecodeLimits(max_readings_per_message=-1),
        DecodeLimits(max_depth=1000),
        DecodeLimits(max_past_seconds=-5),
        DecodeLimits(max_future_seconds=2**62),
    ],
)
def test_unusable_limits_raise_limits_error(limits: DecodeLimits) -> None:
    with pytest.raises(LimitsError, match="max_"):
        Decoder(limits)


def test_limits_error_is_a_native_error() -> None:
    assert issubclass(LimitsError, NativeError)
    assert issubclass(NativeError, Exception)


def test_a_malformed_call_raises_native_error_not_a_reject() -> None:
    decoder = Decoder()
    with pytest.raises(NativeError, match="device_id must be 16 bytes"):
        decoder._native.decode([(b"short", CLIENT.bytes, NOW_US, b"{}")], NOW_US)
    with pytest.raises(NativeError, match="got 3 items"):
        decoder._native.decode([(DEVICE.bytes, CLIENT.bytes, NOW_US)], NOW_US)  # type: ignore[list-item]
    with pytest.raises(TypeError):
        decoder.decode([(DEVICE, CLIENT, NOW_US, "a str, not bytes")], now_us=NOW_US)  # type: ignore[list-item]


def test_hostile_payloads_become_rejects_never_exceptions() -> None:
    payloads = [
        b"",
        b"\x00" * 10,
        b"[" * 100_000,
        b'{"a":' * 10_000,
        b'"\\ud800"',
        b"[1e999999]",
        b'{"ts": -9223372036854775808}',
        b'{"ts": "9999-12-31T23:59:59.999999-23:59"}',
        b'{"ts": "0000-01-01T00:00:00+23:59"}',
        json.dumps({"k": "x" * 300_000}).encode(),
    ]
    batch = Decoder().decode([(DEVICE, CLIENT, NOW_US, p) for p in payloads], now_us=NOW_US)
    assert batch.rows == 0
    assert len(batch.rejects) == len(payloads)
    assert all(r.reason for r in batch.rejects)


def big_batch(readings: int) -> list[tuple[uuid.UUID, uuid.UUID, int, bytes]]:
    reading = {"voltage_l1": 230.1, "current_l1": 4.2, "status": "ok", "uptime_s": 5}
    per_message = 1000
    base_ms = NOW_US // 1000 - 10_000_000
    return [
        (
            DEVICE,
            CLIENT,
            NOW_US,
            json.dumps(
                [{"ts": base_ms + m * per_message + i, **reading} for i in range(per_message)]
            ).encode(),
        )
        for m in range(readings // per_message)
    ]


def test_decoding_releases_the_gil() -> None:
    """While one thread is inside a long decode, another thread keeps running Python code.

    With the GIL held, the main thread could only run at the edges of the call; so ticks
    recorded in the middle half of the decode prove it was released.
    """
    messages = big_batch(200_000)
    decoder = Decoder()
    span: list[float] = []

    def work() -> None:
        span.append(time.perf_counter())
        decoder.decode(messages, now_us=NOW_US)
        span.append(time.perf_counter())

    ticks: list[float] = []
    worker = threading.Thread(target=work)
    worker.start()
    while worker.is_alive():
        ticks.append(time.perf_counter())
    worker.join()
    start, end = span
    quarter = (end - start) / 4
    inside = [t for t in ticks if start + quarter < t < end - quarter]
    assert len(inside) > 100, f"main thread ran {len(inside)} times during the decode"


def test_two_threads_decode_the_same_decoder_concurrently() -> None:
    messages = big_batch(50_000)
    decoder = Decoder()
    expected = decoder.decode(messages, now_us=NOW_US)
    results: list[DecodedBatch] = []
    threads = [
        threading.Thread(target=lambda: results.append(decoder.decode(messages, now_us=NOW_US)))
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2
    assert all(r.copy_data == expected.copy_data for r in results)


def test_the_hand_written_stub_matches_the_extension() -> None:
    """`_ingest_native.pyi` is written by hand: mypy's stubtest checks it against the build."""
    result = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "lifebox_grpc._ingest_native"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
