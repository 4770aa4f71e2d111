"""Decode + COPY-encode throughput: pure Python vs the native core. Prints a table; asserts nothing.

Corpus: the project's realistic readings (``lifebox_grpc.loadgen.readings.corpus``), single-reading
MQTT payloads of about 900 bytes with all 37 known fields, 10 % of them with unknown keys
(``extra``). No database: only the work a batch costs before
``copy_to_table``.

    .venv/bin/python benchmarks/native_decode.py [--readings N]

1. ``json.loads`` + building asyncpg record tuples (what a Python service would write),
2. ``orjson.loads`` + the same tuples,
3. ``lifebox_grpc.native``, one thread,
4. ``lifebox_grpc.native``, two threads sharing one decoder.

Then, in fresh subprocesses, the peak RSS of encoding 1,000,000 readings in batches and the
RSS growth over repeated batches.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from lifebox_grpc.loadgen.readings import corpus as readings_corpus
from lifebox_grpc.native import COLUMN_TYPES, Decoder

Message = tuple[uuid.UUID, uuid.UUID, int, bytes]

BATCH = 500  # messages per batch, as the ingest service batches them
FIELDS = [(name, pg_type) for name, pg_type in COLUMN_TYPES[3:-1]]
KNOWN = {name for name, _ in FIELDS}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
NOW_US = 1_700_000_000_000_000


def corpus(readings: int, seed: int = 7) -> list[Message]:
    """The project's realistic readings (``loadgen.readings.corpus``), spread over 200 devices
    of one client, with reading times an hour before ``NOW_US``."""
    rng = random.Random(seed)
    client = uuid.UUID(int=rng.getrandbits(128))
    devices = [uuid.UUID(int=rng.getrandbits(128)) for _ in range(200)]
    payloads = readings_corpus(readings, seed=seed, base_ts_ms=NOW_US // 1000 - 3_600_000)
    return [(devices[i % len(devices)], client, NOW_US, p) for i, p in enumerate(payloads)]


def batches(messages: Sequence[Message]) -> list[Sequence[Message]]:
    return [messages[i : i + BATCH] for i in range(0, len(messages), BATCH)]


# --- (1) and (2): what a Python ingest service would write --------------------------------


def python_records(
    loads: Callable[[bytes], Any], dumps: Callable[[Any], Any]
) -> Callable[[Sequence[Message]], list[tuple[Any, ...]]]:
    names = [name for name, _ in FIELDS]
    kinds = [pg_type for _, pg_type in FIELDS]

    def check(kind: str, v: Any) -> Any:
        if v is None:
            return None
        if kind == "double precision":
            if type(v) not in (int, float):
                raise TypeError
            return float(v)
        if kind == "bigint":
            if type(v) is not int:
                raise TypeError
            return v
        if kind == "boolean":
            if type(v) is not bool:
                raise TypeError
            return v
        if type(v) is not str:
            raise TypeError
        return v

    def decode(messages: Sequence[Message]) -> list[tuple[Any, ...]]:
        records = []
        for device, client, received_us, payload in messages:
            doc = loads(payload)
            for r in doc if isinstance(doc, list) else [doc]:
                ts = r.get("ts")
                t = EPOCH + timedelta(microseconds=received_us if ts is None else ts * 1000)
                try:
                    values = [check(k, r.get(n)) for n, k in zip(names, kinds, strict=True)]
                except TypeError:
                    continue
                unknown = {k: v for k, v in r.items() if k != "ts" and k not in KNOWN}
                records.append((t, device, client, *values, dumps(unknown) if unknown else None))
        return records

    return decode


# --- timing ----------------------------------------------------------------------------------


def rate(run: Callable[[], None], readings: int, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return readings / best


def native_one_thread(decoder: Decoder, work: list[Sequence[Message]]) -> Callable[[], None]:
    def run() -> None:
        for b in work:
            decoder.decode(b, now_us=NOW_US)

    return run


def native_two_threads(decoder: Decoder, work: list[Sequence[Message]]) -> Callable[[], None]:
    def run() -> None:
        halves = [work[0::2], work[1::2]]
        threads = [threading.Thread(target=native_one_thread(decoder, half)) for half in halves]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    return run


# --- memory (in a fresh interpreter so earlier phases don't pollute the peak) ---------------

MEMORY_SCRIPT = """
import resource, sys, uuid
sys.path.insert(0, {root!r})
from benchmarks.native_decode import corpus, NOW_US
from lifebox_grpc.native import Decoder
pool = corpus(5000, seed=11)
decoder = Decoder()
def rss_kib():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * resource.getpagesize() // 1024
base = rss_kib()
total, per_batch, samples = 0, 500, []
batches = {total_readings} // per_batch
for b in range(batches):
    start = (b * per_batch) % len(pool)
    msgs = [(uuid.UUID(int=b), c, r, p) for (_, c, r, p) in pool[start:start + per_batch]]
    out = decoder.decode(msgs, now_us=NOW_US)
    total += out.rows
    if b in (batches // 10, batches - 1):
        samples.append(rss_kib())
# VmHWM, not ru_maxrss: the latter keeps the forking parent's size across exec.
with open('/proc/self/status') as f:
    peak = next(int(line.split()[1]) for line in f if line.startswith('VmHWM:'))
print(total, base, peak, samples[0], samples[1])
"""


def memory(total_readings: int) -> tuple[int, int, int, int, int]:
    root = str(__import__("pathlib").Path(__file__).resolve().parents[1])
    script = MEMORY_SCRIPT.format(root=root, total_readings=total_readings)
    out = subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True
    ).stdout
    total, base, peak, early, late = map(int, out.split())
    return total, base, peak, early, late


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--readings", type=int, default=40_000)
    parser.add_argument("--memory-readings", type=int, default=1_000_000)
    args = parser.parse_args()

    messages = corpus(args.readings)
    work = batches(messages)
    size = sum(len(m[3]) for m in messages) / len(messages)
    decoder = Decoder()
    # The native path must accept every reading, or the comparison is unfair.
    decoded = sum(decoder.decode(b, now_us=NOW_US).rows for b in work)
    assert decoded == len(messages), decoded

    py_json = python_records(json.loads, json.dumps)
    py_orjson = python_records(orjson.loads, orjson.dumps)
    rows = [
        ("1 json.loads + record tuples", rate(lambda: [py_json(b) for b in work], len(messages))),
        (
            "2 orjson.loads + record tuples",
            rate(lambda: [py_orjson(b) for b in work], len(messages)),
        ),
        ("3 native, 1 thread", rate(native_one_thread(decoder, work), len(messages))),
        ("4 native, 2 threads", rate(native_two_threads(decoder, work), len(messages))),
    ]
    r = dict(rows)
    print(
        f"machine: {platform.machine()} {platform.processor() or ''}, cores: {_cores()}, "
        f"Python {platform.python_version()}"
    )
    print(f"corpus: {len(messages)} readings, mean payload {size:.0f} B, batches of {BATCH}\n")
    print(f"{'path':34} {'readings/s':>12} {'us/reading':>11}")
    for name, value in rows:
        print(f"{name:34} {value:12,.0f} {1e6 / value:11.2f}")
    print()
    n1, n2, n3, n4 = (r[name] for name, _ in rows)
    for label, got, target in (
        ("(3) / (1)", n3 / n1, 10.0),
        ("(3) / (2)", n3 / n2, 3.0),
        ("(4) / (3)", n4 / n3, 1.7),
    ):
        print(f"{label}: {got:6.2f}x  (target >= {target}x) {'ok' if got >= target else 'MISSED'}")

    total, base, peak, early, late = memory(args.memory_readings)
    print(
        f"\nmemory, {total:,} readings in batches of 500 (fresh interpreter):\n"
        f"  RSS after imports + corpus pool: {base / 1024:7.1f} MiB\n"
        f"  peak RSS (VmHWM):                {peak / 1024:7.1f} MiB\n"
        f"  RSS at 10% of the batches:       {early / 1024:7.1f} MiB\n"
        f"  RSS after the last batch:        {late / 1024:7.1f} MiB "
        f"(growth {(late - early) / 1024:+.1f} MiB)"
    )


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    main()
