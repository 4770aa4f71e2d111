"""Session fixtures: one real PostgreSQL cluster and one real mosquitto on free ports.

Tests never touch services the machine may run on 5432/1883. Each test that writes data
makes its own tenant (client) and topics, so tests don't see each other.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from lifebox_grpc.runtime.mosquitto import EmbeddedMosquitto
from tests.helpers.broker import running_broker_sync
from tests.helpers.services import (
    STORAGE_PATHS,
    Database,
    running_broker,
    running_database,
    session_storage,
    storage_unavailable,
)

# The gRPC server fixture (`grpc_server`) lives with its helpers.
pytest_plugins = ("tests.helpers.grpc",)


@pytest.fixture(scope="session")
def session_database() -> Iterator[Database]:
    """A migrated, seeded PostgreSQL 15 cluster shared by the session, on the storage path
    ``LIFEBOX_TEST_STORAGE`` names (pg_partman unless told otherwise)."""
    storage = session_storage()
    reason = storage_unavailable(storage)
    if reason:
        pytest.exit(f"LIFEBOX_TEST_STORAGE={storage}: {reason}", returncode=2)
    with running_database(storage=storage) as db:
        yield db


@pytest.fixture(scope="session")
def database(session_database: Database) -> Database:
    """The cluster tests use. A module whose tests must hold on both storage paths overrides
    it with ``storage_database``."""
    return session_database


@pytest.fixture(scope="session")
def other_storage_database(session_database: Database) -> Iterator[Database | None]:
    """A second cluster on the storage path the session's cluster is not on, or None when
    that path cannot run here (then tests on it are skipped, saying why)."""
    (other,) = (path for path in STORAGE_PATHS if path != session_database.storage)
    if storage_unavailable(other):
        yield None
        return
    with running_database(storage=other) as db:
        yield db


@pytest.fixture(params=STORAGE_PATHS)
def storage_database(request: pytest.FixtureRequest, session_database: Database) -> Database:
    """The cluster of each storage path in turn: storage-sensitive tests run on both."""
    if request.param == session_database.storage:
        return session_database
    reason = storage_unavailable(request.param)
    if reason:
        pytest.skip(reason)
    other: Database | None = request.getfixturevalue("other_storage_database")
    assert other is not None
    return other


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``storage(path)`` belong to one storage path: skipped on the other."""
    storage = session_storage()
    for item in items:
        marker = item.get_closest_marker("storage")
        if marker and storage not in marker.args:
            item.add_marker(
                pytest.mark.skip(
                    reason=f"{', '.join(marker.args)} only; this session runs on {storage} "
                    "(LIFEBOX_TEST_STORAGE)"
                )
            )


@pytest.fixture(scope="session")
def broker(session_database: Database) -> Iterator[EmbeddedMosquitto]:
    """A mosquitto broker shared by the session, anonymous access off, and a `lifebox
    broker-sync` process keeping its files equal to the session database's device
    credentials (a credential a test creates there logs in within a second). Accounts:
    ``broker.url`` is ingest's, ``broker.url_for(TEST_PUBLISHER)`` may publish anywhere."""
    with (
        running_broker() as running,
        running_broker_sync(session_database.broker_sync_dsn, running),
    ):
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
