"""A real `serve` (``start_server``) for gRPC tests, and tenants with a signed-in user per role.

``grpc_server`` runs once per session against the ``database`` fixture; ``tenant_pair`` makes
two fresh clients, each with one user of every tenant role, plus a staff user of each staff
role, all signed in through the real Login RPC.
"""

from __future__ import annotations

import functools
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from lifebox.v1 import auth_pb2, auth_pb2_grpc, clients_pb2_grpc
from lifebox_grpc.auth.passwords import hash_password
from lifebox_grpc.config import Settings
from lifebox_grpc.runtime.mosquitto import EmbeddedMosquitto
from lifebox_grpc.server import RunningServer, start_server
from tests.helpers import factories
from tests.helpers.services import Database

PASSWORD = "correct horse battery staple"
SIGNING_KEY = "test-signing-key-" + "k" * 40
TENANT_ROLES = ("client", "operator", "viewer")
STAFF_ROLES = ("super_user", "admin")


@functools.cache
def password_hash() -> str:
    """One argon2id hash of :data:`PASSWORD`, shared by every test user (hashing is slow)."""
    return hash_password(PASSWORD)


def server_settings(database: Database, broker: EmbeddedMosquitto, **overrides: Any) -> Settings:
    """Settings of a test server: free ports, the test cluster, a private home (outbox)."""
    values: dict[str, Any] = {
        "database_url": database.app_dsn,
        "owner_database_url": database.owner_dsn,
        "ingest_database_url": database.ingest_dsn,
        "mqtt_url": broker.url,
        "grpc_port": 0,
        "http_port": 0,
        "jwt_signing_key": SIGNING_KEY,
        "home": Path(tempfile.mkdtemp(prefix="lifebox-test-home-")),
        # Every test signs in from 127.0.0.1: per-address limits are tested on their own server.
        "login_attempts_per_address": 100_000,
        "reset_requests_per_address": 100_000,
    }
    values.update(overrides)
    return Settings(**values)


@dataclass
class Server:
    """A running server and a channel to it."""

    running: RunningServer
    channel: grpc.aio.Channel
    settings: Settings

    @property
    def auth(self) -> auth_pb2_grpc.AuthServiceStub:
        return auth_pb2_grpc.AuthServiceStub(self.channel)

    @property
    def clients(self) -> clients_pb2_grpc.ClientServiceStub:
        return clients_pb2_grpc.ClientServiceStub(self.channel)

    @property
    def outbox(self) -> Path:
        return self.settings.home.resolve() / "outbox"


async def open_server(settings: Settings, **kwargs: Any) -> Server:
    running = await start_server(settings, **kwargs)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.grpc_port}")
    return Server(running, channel, settings)


async def close_server(server: Server) -> None:
    await server.channel.close()
    await server.running.stop(1)


@pytest.fixture(scope="session")
async def grpc_server(database: Database, broker: EmbeddedMosquitto) -> AsyncIterator[Server]:
    """One real server for the session."""
    server = await open_server(server_settings(database, broker))
    yield server
    await close_server(server)


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


@dataclass
class Account:
    """A user that exists and has signed in."""

    user_id: uuid.UUID
    email: str
    role: str
    client_id: uuid.UUID | None
    access_token: str = ""
    refresh_token: str = ""

    @property
    def md(self) -> tuple[tuple[str, str], ...]:
        return bearer(self.access_token)


@dataclass
class Tenant:
    """A client and one signed-in user of each tenant role."""

    client_id: uuid.UUID
    users: dict[str, Account] = field(default_factory=dict)


async def make_account(conn: asyncpg.Connection, role: str, client_id: uuid.UUID | None) -> Account:
    email = f"{factories.unique(role)}@test.lifebox.local"
    user_id = await factories.make_user(
        conn, client_id, role=role, email=email, password_hash=password_hash()
    )
    return Account(user_id, email, role, None if role in STAFF_ROLES else client_id)


async def sign_in(server: Server, account: Account, password: str = PASSWORD) -> Account:
    reply = await server.auth.Login(
        auth_pb2.LoginRequest(email=account.email, password=password), timeout=10
    )
    account.access_token = reply.tokens.access_token
    account.refresh_token = reply.tokens.refresh_token
    return account


async def make_tenant(server: Server, conn: asyncpg.Connection) -> Tenant:
    tenant = Tenant(await factories.make_client(conn))
    for role in TENANT_ROLES:
        tenant.users[role] = await sign_in(server, await make_account(conn, role, tenant.client_id))
    return tenant


async def make_staff(server: Server, conn: asyncpg.Connection, role: str) -> Account:
    return await sign_in(server, await make_account(conn, role, None))


def error_of(exc: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, dict[str, Any]]:
    """The status code and the decoded ``google.rpc`` details of a failed call."""
    status: status_pb2.Status | None = rpc_status.from_call(exc)  # type: ignore[arg-type]
    details: dict[str, Any] = {}
    if status is not None:
        for packed in status.details:
            for kind in (
                error_details_pb2.ErrorInfo,
                error_details_pb2.BadRequest,
                error_details_pb2.QuotaFailure,
                error_details_pb2.RetryInfo,
            ):
                if packed.Is(kind.DESCRIPTOR):
                    message = kind()
                    packed.Unpack(message)
                    details[kind.DESCRIPTOR.name] = message
    return exc.code(), details


def violations(exc: grpc.aio.AioRpcError) -> dict[str, str]:
    """Field → description of the BadRequest detail of a failed call."""
    _, details = error_of(exc)
    bad = details.get("BadRequest")
    return {v.field: v.description for v in bad.field_violations} if bad else {}


def reason(exc: grpc.aio.AioRpcError) -> str:
    _, details = error_of(exc)
    info = details.get("ErrorInfo")
    return str(info.reason) if info else ""
