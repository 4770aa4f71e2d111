"""Throwaway PostgreSQL clusters and brokers for tests, built on the runtime launchers."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import tempfile
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

from lifebox_grpc.runtime.mosquitto import DEFAULT_ACCOUNTS, EmbeddedMosquitto
from lifebox_grpc.runtime.postgres import (
    APP_ROLE,
    INGEST_ROLE,
    OWNER_ROLE,
    SUPERUSER,
    SYNC_ROLE,
    EmbeddedPostgres,
    RolePasswords,
    dsn,
    timescaledb_available,
)
from lifebox_grpc.store import migrations, seeds

T = TypeVar("T")

PARTMAN = "partman"
TIMESCALEDB = "timescaledb"
STORAGE_PATHS = (PARTMAN, TIMESCALEDB)


def session_storage() -> str:
    """The storage path of the session's main cluster: ``LIFEBOX_TEST_STORAGE``, default
    pg_partman (what CI runs); ``timescaledb`` runs the whole suite on hypertables."""
    storage = os.environ.get("LIFEBOX_TEST_STORAGE", PARTMAN)
    if storage not in STORAGE_PATHS:
        raise ValueError(f"LIFEBOX_TEST_STORAGE must be one of {STORAGE_PATHS}, not {storage!r}")
    return storage


def storage_unavailable(storage: str) -> str | None:
    """Why a cluster on this storage path cannot be started here, or None when it can."""
    if storage == TIMESCALEDB and not timescaledb_available():
        return (
            "TimescaleDB is not installed for this machine's PostgreSQL 15, so the hypertable "
            "path is not tested here (install the extension; LIFEBOX_TEST_STORAGE=timescaledb "
            "runs the whole suite on it)"
        )
    return None


def private_tmpdir(prefix: str) -> Path:
    """A temp folder the postgres/mosquitto service users can traverse (pytest's are 0700)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o711)
    return path


@dataclass
class Database:
    """A running, migrated and seeded cluster and the DSN of each role."""

    server: EmbeddedPostgres

    @property
    def storage(self) -> str:
        return TIMESCALEDB if self.server.timescaledb else PARTMAN

    @property
    def owner_dsn(self) -> str:
        return self.server.dsn(OWNER_ROLE)

    @property
    def app_dsn(self) -> str:
        return self.server.dsn(APP_ROLE)

    @property
    def ingest_dsn(self) -> str:
        return self.server.dsn(INGEST_ROLE)

    @property
    def broker_sync_dsn(self) -> str:
        """`lifebox broker-sync`'s role (SELECT on the credentials it renders)."""
        return self.server.dsn(SYNC_ROLE)

    @property
    def superuser_dsn(self) -> str:
        return self.server.dsn(SUPERUSER)

    @property
    def superuser_lifebox_dsn(self) -> str:
        """The superuser, in the lifebox database (not the maintenance database)."""
        server = self.server
        return dsn(server.port, SUPERUSER, server.passwords.superuser, socket_dir=server.socket_dir)


def run_blocking(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion, also from inside a running event loop (own thread)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


async def _migrate_and_seed(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await migrations.migrate(conn)
        await seeds.seed_reference(conn)
    finally:
        await conn.close()


@contextmanager
def running_database(migrate: bool = True, *, storage: str = PARTMAN) -> Iterator[Database]:
    base = private_tmpdir("lifebox-test-pg-")
    passwords = RolePasswords(*(secrets.token_urlsafe(16) for _ in range(5)))
    server = EmbeddedPostgres(base / "pg", passwords, timescaledb=storage == TIMESCALEDB)
    try:
        server.start()
        run_blocking(server.bootstrap())
        db = Database(server)
        if migrate:
            run_blocking(_migrate_and_seed(db.owner_dsn))
        yield db
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


# A test-only account that may publish and read any topic: tests publish as arbitrary
# devices (unknown serials, hostile topics) without a credential per serial. Never in dev.
TEST_PUBLISHER = "lifebox-test-publisher"
TEST_PUBLISHER_ACL = f"user {TEST_PUBLISHER}\ntopic readwrite #\n"
_BROKERS: dict[int, EmbeddedMosquitto] = {}


def broker_on(port: int) -> EmbeddedMosquitto:
    """The test broker listening on ``port`` (helpers that are given a port find its
    accounts here)."""
    return _BROKERS[port]


@contextmanager
def running_broker(**options: int) -> Iterator[EmbeddedMosquitto]:
    """An embedded mosquitto with anonymous access off: the platform's service accounts and
    the test publisher (``broker.url_for(TEST_PUBLISHER)``); ``options``: its limits
    (:class:`EmbeddedMosquitto`'s keyword arguments, e.g. ``max_queued_bytes``)."""
    base = private_tmpdir("lifebox-test-mqtt-")
    broker = EmbeddedMosquitto(
        base / "mqtt",
        accounts=(*DEFAULT_ACCOUNTS, TEST_PUBLISHER),
        extra_acl=TEST_PUBLISHER_ACL,
        **options,
    )
    try:
        broker.start()
        _BROKERS[broker.port] = broker
        yield broker
    finally:
        _BROKERS.pop(broker.port, None)
        broker.stop()
        shutil.rmtree(base, ignore_errors=True)
