"""Session fixtures: one real PostgreSQL cluster and one real mosquitto on free ports.

Tests never touch services the machine may run on 5432/1883. Each test that writes data
makes its own tenant (client) and topics, so tests don't see each other.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from lifebox_grpc.runtime.mosquitto import EmbeddedMosquitto
from tests.helpers.services import Database, running_broker, running_database

# The gRPC server fixture (`grpc_server`) lives with its helpers.
pytest_plugins = ("tests.helpers.grpc",)


@pytest.fixture(scope="session")
def database() -> Iterator[Database]:
    """A migrated, seeded PostgreSQL 15 cluster shared by the session."""
    with running_database() as db:
        yield db


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedMosquitto]:
    """A mosquitto broker shared by the session."""
    with running_broker() as running:
        yield running


@pytest.fixture
async def owner_conn(database: Database) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database.owner_dsn)
    yield conn
    await conn.close()


@pytest.fixture
async def app_conn(database: Database) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database.app_dsn)
    yield conn
    await conn.close()
