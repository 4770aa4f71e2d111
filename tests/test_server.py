"""`serve` core: health follows the database, metrics and reflection answer."""

from __future__ import annotations

import aiohttp
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from lifebox_grpc.config import Settings
from lifebox_grpc.runtime.mosquitto import EmbeddedMosquitto
from lifebox_grpc.server import start_server
from tests.helpers.services import Database
from tests.helpers.wait import async_wait_until


def _settings(database: Database, broker: EmbeddedMosquitto) -> Settings:
    return Settings(
        database_url=database.app_dsn,
        owner_database_url=database.owner_dsn,
        ingest_database_url=database.ingest_dsn,
        mqtt_url=broker.url,
        grpc_port=0,
        http_port=0,
        jwt_signing_key="test-signing-key-" + "x" * 32,
    )


async def test_health_is_serving_metrics_and_reflection_answer(
    database: Database, broker: EmbeddedMosquitto
) -> None:
    running = await start_server(_settings(database, broker))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.grpc_port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)

            async def serving() -> bool:
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=2)
                return reply.status == health_pb2.HealthCheckResponse.SERVING

            await async_wait_until(serving, 15, "SERVING")

            reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            names = set()
            async for reply in reflect.ServerReflectionInfo(iter([request])):
                names |= {s.name for s in reply.list_services_response.service}
            assert "grpc.health.v1.Health" in names

        url = f"http://127.0.0.1:{running.http_port}"
        async with aiohttp.ClientSession() as http:
            async with http.get(url + "/metrics") as response:
                body = await response.text()
            assert "lifebox_database_up 1.0" in body
            async with http.get(url + "/healthz") as response:
                assert response.status == 200
    finally:
        await running.stop(1)
