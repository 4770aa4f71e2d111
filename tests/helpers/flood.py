"""A greedy API client in a process of its own: concurrent aggregates and many streams.

``python -m tests.helpers.flood '<json>'`` with target, token, an AggregateTelemetry and a
StreamTelemetry request (JSON forms), ``aggregates`` (how many run at once, each re-sent as
soon as it ends, however it ended) and ``streams`` (how many are opened and held). Prints
``streams-answered`` once the server has answered every stream (with its initial metadata or
its end), ``aggregate-done`` after the first aggregate that succeeded, and when stdin closes,
one JSON line: outcomes by call and status, and whether every RESOURCE_EXHAUSTED carried
QuotaFailure and RetryInfo.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter
from typing import Any

import grpc
from google.protobuf import json_format
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from lifebox.v1 import telemetry_pb2, telemetry_pb2_grpc


def _has_quota_details(exc: grpc.aio.AioRpcError) -> bool:
    status: status_pb2.Status | None = rpc_status.from_call(exc)  # type: ignore[arg-type]
    kinds = {d.type_url.rsplit("/", 1)[-1] for d in status.details} if status else set()
    return {
        error_details_pb2.QuotaFailure.DESCRIPTOR.full_name,
        error_details_pb2.RetryInfo.DESCRIPTOR.full_name,
    } <= kinds


class Flood:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.md = (("authorization", f"Bearer {spec['token']}"),)
        self.outcomes: Counter[str] = Counter()
        self.quota_details = True
        self.stop = asyncio.Event()
        self.first_aggregate = asyncio.Event()

    def _failed(self, call: str, exc: grpc.aio.AioRpcError) -> None:
        self.outcomes[f"{call} {exc.code().name}"] += 1
        if exc.code() is grpc.StatusCode.RESOURCE_EXHAUSTED and not _has_quota_details(exc):
            self.quota_details = False

    async def aggregates(self, api: telemetry_pb2_grpc.TelemetryServiceStub) -> None:
        request = json_format.ParseDict(
            self.spec["aggregate"], telemetry_pb2.AggregateTelemetryRequest()
        )
        while not self.stop.is_set():
            try:
                await api.AggregateTelemetry(request, metadata=self.md, timeout=120)
            except grpc.aio.AioRpcError as exc:
                self._failed("aggregate", exc)
            else:
                self.outcomes["aggregate OK"] += 1
                self.first_aggregate.set()

    async def stream(self, call: Any, answered: asyncio.Queue[None]) -> None:
        try:
            try:
                await call.initial_metadata()
            finally:
                answered.put_nowait(None)
            async for _ in call:
                pass
        except grpc.aio.AioRpcError as exc:
            if exc.code() is not grpc.StatusCode.CANCELLED:
                self._failed("stream", exc)
        else:
            self.outcomes["stream ended"] += 1

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_reader(sys.stdin.fileno(), self._stdin)
        # A full-size aggregate is past grpc's default 4 MB: take what the server sends.
        options = [("grpc.max_receive_message_length", self.spec["max_message_bytes"])]
        async with grpc.aio.insecure_channel(self.spec["target"], options=options) as channel:
            api = telemetry_pb2_grpc.TelemetryServiceStub(channel)
            request = json_format.ParseDict(
                self.spec["stream"], telemetry_pb2.StreamTelemetryRequest()
            )
            answered: asyncio.Queue[None] = asyncio.Queue()
            calls = [
                api.StreamTelemetry(request, metadata=self.md) for _ in range(self.spec["streams"])
            ]
            readers = [asyncio.create_task(self.stream(c, answered)) for c in calls]
            workers = [
                asyncio.create_task(self.aggregates(api)) for _ in range(self.spec["aggregates"])
            ]
            for _ in calls:
                await answered.get()
            print("streams-answered", flush=True)
            await self.first_aggregate.wait()
            print("aggregate-done", flush=True)
            await self.stop.wait()
            for call in calls:
                call.cancel()
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*readers, *workers, return_exceptions=True)
        print(json.dumps({"outcomes": self.outcomes, "quota_details": self.quota_details}))

    def _stdin(self) -> None:
        if not sys.stdin.buffer.read1(1024):
            asyncio.get_running_loop().remove_reader(sys.stdin.fileno())
            self.stop.set()


if __name__ == "__main__":
    asyncio.run(Flood(json.loads(sys.argv[1])).run())
