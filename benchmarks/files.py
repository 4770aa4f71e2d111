"""FileService throughput: upload, whole download and a ranged download of one file, on the
PostgreSQL store and on the local-directory store, in one run, side by side. Asserts nothing.

    .venv/bin/python benchmarks/files.py [--mib 20] [--rounds 3] [--chunk-kib 1024]

A fresh PostgreSQL cluster (the test suite's launcher) and `lifebox serve` as its own process
per store; one client administrator uploads a ``--mib`` file (PNG-signed random bytes) in
``--chunk-kib`` messages, downloads it whole, then 1 MiB from its middle. Each figure is the
median over the rounds, timed at the client over loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import grpc

from lifebox.v1 import auth_pb2, auth_pb2_grpc, files_pb2_grpc
from lifebox.v1 import files_pb2 as pb
from lifebox_grpc.auth.passwords import hash_password
from lifebox_grpc.runtime.ports import free_port
from tests.helpers import factories
from tests.helpers.services import running_database

sys.path.insert(0, str(Path(__file__).parent))
from api import start_serve
from page_data import wait_serving

PASSWORD = "bench password " + "x" * 8
PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452")


async def make_user(owner_dsn: str, email: str) -> None:
    conn = await asyncpg.connect(owner_dsn)
    try:
        client = await factories.make_client(conn)
        await factories.make_user(
            conn, client, role="client", email=email, password_hash=hash_password(PASSWORD)
        )
    finally:
        await conn.close()


async def measure(target: str, email: str, mib: int, rounds: int, chunk: int) -> dict[str, float]:
    channel = grpc.aio.insecure_channel(
        target, options=[("grpc.max_receive_message_length", 32 * 1024 * 1024)]
    )
    await wait_serving(channel)
    login = await auth_pb2_grpc.AuthServiceStub(channel).Login(
        auth_pb2.LoginRequest(email=email, password=PASSWORD)
    )
    md = (("authorization", f"Bearer {login.tokens.access_token}"),)
    s = files_pb2_grpc.FileServiceStub(channel)
    data = PNG + os.urandom(mib * 1024 * 1024 - len(PNG))
    times: dict[str, list[float]] = {"upload": [], "download": [], "range 1 MiB": []}

    async def parts() -> AsyncIterator[pb.UploadFileRequest]:
        yield pb.UploadFileRequest(metadata=pb.FileMetadata(name="b.png", content_type="image/png"))
        for at in range(0, len(data), chunk):
            yield pb.UploadFileRequest(chunk=data[at : at + chunk])

    async def read(request: pb.DownloadFileRequest) -> int:
        n = 0
        async for message in s.DownloadFile(request, metadata=md, timeout=120):
            n += len(message.data)
        return n

    for _ in range(rounds):
        start = time.perf_counter()
        f = (await s.UploadFile(parts(), metadata=md, timeout=120)).file
        times["upload"].append(time.perf_counter() - start)
        start = time.perf_counter()
        assert await read(pb.DownloadFileRequest(id=f.id)) == len(data)
        times["download"].append(time.perf_counter() - start)
        start = time.perf_counter()
        middle = len(data) // 2
        request = pb.DownloadFileRequest(id=f.id, offset=middle, length=1024 * 1024)
        assert await read(request) == 1024 * 1024
        times["range 1 MiB"].append(time.perf_counter() - start)
        await s.DeleteFile(pb.DeleteFileRequest(id=f.id), metadata=md)
    await channel.close()
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--chunk-kib", type=int, default=1024)
    args = parser.parse_args()
    results: dict[str, dict[str, float]] = {}
    with running_database() as db:
        for store in ("postgres", "local"):
            email = f"files-bench-{store}@lifebox.local"
            asyncio.run(make_user(db.owner_dsn, email))
            port = free_port()
            with tempfile.TemporaryDirectory(prefix="lifebox-bench-") as home:
                os.environ["LIFEBOX_FILES_STORE"] = store
                os.environ["LIFEBOX_FILES_MAX_BYTES"] = str((args.mib + 1) * 1024 * 1024)
                serve = start_serve(db, port, Path(home))
                try:
                    results[store] = asyncio.run(
                        measure(f"127.0.0.1:{port}", email, args.mib, args.rounds,
                                args.chunk_kib * 1024)
                    )  # fmt: skip
                finally:
                    serve.terminate()
                    serve.wait(30)
    print(f"{args.mib} MiB file, {args.chunk_kib} KiB messages, median of {args.rounds} rounds")
    print(f"{'':14}{'postgres':>20}{'local':>20}")
    for what in ("upload", "download", "range 1 MiB"):
        cells = []
        for store in ("postgres", "local"):
            seconds = results[store][what]
            size = 1 if what.startswith("range") else args.mib
            cells.append(f"{seconds * 1000:8.1f} ms {size / seconds:6.1f} MiB/s")
        print(f"{what:14}{cells[0]:>20}{cells[1]:>20}")


if __name__ == "__main__":
    main()
