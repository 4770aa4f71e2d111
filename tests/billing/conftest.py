"""Billing fixtures: the fake Fawry, and a real `serve` configured to use it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from lifebox_grpc.runtime.mosquitto import EmbeddedMosquitto
from tests.helpers.fawry_fake import MERCHANT_CODE, SECURE_KEY, FakeFawry
from tests.helpers.grpc import Server, close_server, open_server, server_settings
from tests.helpers.services import Database


@pytest.fixture(scope="session")
async def fawry() -> AsyncIterator[FakeFawry]:
    fake = FakeFawry()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture(scope="session")
async def billing_server(
    database: Database, broker: EmbeddedMosquitto, fawry: FakeFawry
) -> AsyncIterator[Server]:
    """A real server whose Fawry is the fake; the webhook is on its HTTP listener."""
    settings = server_settings(
        database,
        broker,
        fawry_merchant_code=MERCHANT_CODE,
        fawry_secure_key=SECURE_KEY,
        fawry_base_url=fawry.url,
        fawry_timeout_seconds=5,
    )
    server = await open_server(settings)
    yield server
    await close_server(server)


@pytest.fixture(autouse=True)
def _reset_fake(fawry: FakeFawry) -> None:
    fawry.status_unavailable = False
    fawry.status_override.clear()
