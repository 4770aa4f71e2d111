"""The server core over real calls: request ids, the error model, the deadline cap and
cancellation reaching PostgreSQL, fail-closed permissions, the access log, TLS."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from google.protobuf import empty_pb2

from lifebox.v1 import auth_pb2
from lifebox_grpc.auth.permissions import METHOD_RULES, Access, Rule
from lifebox_grpc.runtime.mosquitto import EmbeddedMosquitto
from lifebox_grpc.server import PlaintextRefused, start_server
from lifebox_grpc.services.registry import method_names
from tests.helpers import factories
from tests.helpers.grpc import (
    PASSWORD,
    Server,
    close_server,
    error_of,
    make_account,
    open_server,
    server_settings,
    sign_in,
)
from tests.helpers.services import Database
from tests.helpers.wait import async_wait_until

PROBE = "lifebox.test.Probe"
_pool: dict[str, asyncpg.Pool] = {}


async def _sleep_in_db(request: empty_pb2.Empty, context: Any) -> empty_pb2.Empty:
    async with _pool["pool"].acquire() as conn:
        await conn.execute("SET application_name = 'lifebox-probe-sleep'")
        await conn.fetchval("SELECT pg_sleep(30)")
    return empty_pb2.Empty()


async def _explode(request: empty_pb2.Empty, context: Any) -> empty_pb2.Empty:
    raise RuntimeError("SELECT secret FROM internals -- must never reach a client")


def _handler(behavior: Any) -> grpc.RpcMethodHandler:
    return grpc.unary_unary_rpc_method_handler(
        behavior,
        request_deserializer=empty_pb2.Empty.FromString,
        response_serializer=empty_pb2.Empty.SerializeToString,
    )


PROBE_HANDLERS = grpc.method_handlers_generic_handler(
    PROBE,
    {
        "Sleep": _handler(_sleep_in_db),
        "Explode": _handler(_explode),
        "Undeclared": _handler(_explode),
    },
)
PROBE_RULES = {
    f"/{PROBE}/Sleep": Rule(Access.PUBLIC),
    f"/{PROBE}/Explode": Rule(Access.PUBLIC),
}


@pytest.fixture
async def superuser_conn(database: Database) -> AsyncIterator[asyncpg.Connection]:
    """Only a superuser sees the state of other roles' sessions in pg_stat_activity."""
    conn = await asyncpg.connect(database.superuser_dsn)
    yield conn
    await conn.close()


@pytest.fixture
async def probe_server(database: Database, broker: EmbeddedMosquitto) -> AsyncIterator[Server]:
    server = await open_server(
        server_settings(database, broker, grpc_max_deadline_seconds=1.0),
        extra_handlers=[PROBE_HANDLERS],
        extra_rules=PROBE_RULES,
    )
    _pool["pool"] = server.running.pool
    yield server
    await close_server(server)


def _probe(server: Server, name: str) -> Any:
    return server.channel.unary_unary(
        f"/{PROBE}/{name}",
        request_serializer=empty_pb2.Empty.SerializeToString,
        response_deserializer=empty_pb2.Empty.FromString,
    )


async def _sleeping_queries(conn: asyncpg.Connection) -> int:
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
            "'lifebox-probe-sleep' AND state = 'active'"
        )
    )


async def test_every_method_of_our_services_has_a_permission_rule() -> None:
    assert set(method_names()) <= set(METHOD_RULES)


async def test_a_method_without_a_rule_is_refused(probe_server: Server) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _probe(probe_server, "Undeclared")(empty_pb2.Empty())
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_request_id_is_echoed_or_made(grpc_server: Server) -> None:
    call = grpc_server.auth.ListRoles(
        auth_pb2.ListRolesRequest(), metadata=(("x-request-id", "trace-12345678"),)
    )
    with pytest.raises(grpc.aio.AioRpcError):
        await call
    assert ("x-request-id", "trace-12345678") in tuple(await call.initial_metadata())
    call = grpc_server.auth.ListRoles(auth_pb2.ListRolesRequest())
    with pytest.raises(grpc.aio.AioRpcError):
        await call
    made = dict(await call.initial_metadata())["x-request-id"]
    assert len(made) == 32


async def test_unexpected_errors_are_internal_with_only_a_request_id(
    probe_server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    call = _probe(probe_server, "Explode")(empty_pb2.Empty())
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await call
    code, details = error_of(failed.value)
    request_id = dict(await call.initial_metadata())["x-request-id"]
    assert code == grpc.StatusCode.INTERNAL
    assert failed.value.details() == f"internal error; request id {request_id}"
    assert details["ErrorInfo"].metadata["request_id"] == request_id
    assert "secret" not in str(failed.value.trailing_metadata())
    logged = [r for r in caplog.records if getattr(r, "request_id", None) == request_id]
    assert any(r.exc_info for r in logged), "the traceback is in the log, with the request id"


async def test_the_server_caps_deadlines_and_cancels_the_database_call(
    probe_server: Server, superuser_conn: asyncpg.Connection
) -> None:
    owner_conn = superuser_conn
    call = _probe(probe_server, "Sleep")(empty_pb2.Empty())  # no client deadline at all

    async def sleeping() -> bool:
        return await _sleeping_queries(owner_conn) == 1

    await async_wait_until(sleeping, 10, "pg_sleep to start")
    with pytest.raises(grpc.aio.AioRpcError) as capped:
        await call
    assert capped.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

    async def no_sleeping_query() -> bool:
        return await _sleeping_queries(owner_conn) == 0

    await async_wait_until(no_sleeping_query, 10, "pg_sleep to be cancelled")


async def test_a_client_cancel_reaches_the_database_call(
    probe_server: Server, superuser_conn: asyncpg.Connection
) -> None:
    owner_conn = superuser_conn
    call = _probe(probe_server, "Sleep")(empty_pb2.Empty(), timeout=30)

    async def sleeping() -> bool:
        return await _sleeping_queries(owner_conn) == 1

    await async_wait_until(sleeping, 10, "pg_sleep to start")
    call.cancel()

    async def no_sleeping_query() -> bool:
        return await _sleeping_queries(owner_conn) == 0

    await async_wait_until(no_sleeping_query, 10, "pg_sleep to be cancelled")


async def test_access_log_names_the_call_but_never_a_secret(
    grpc_server: Server, owner_conn: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    account = await make_account(owner_conn, "client", await factories.make_client(owner_conn))
    await sign_in(grpc_server, account)
    await grpc_server.auth.GetMe(auth_pb2.GetMeRequest(), metadata=account.md)
    lines = [r for r in caplog.records if r.name == "lifebox.access"]
    get_me = [r for r in lines if getattr(r, "method", "") == "GetMe"]
    assert get_me
    assert get_me[-1].__dict__["code"] == "OK"
    assert get_me[-1].__dict__["principal"] == f"{account.user_id}/client"
    assert get_me[-1].__dict__["latency_ms"] >= 0
    everything = "\n".join(str(r.__dict__) for r in caplog.records)
    for secret in (PASSWORD, account.access_token, account.refresh_token):
        assert secret not in everything


async def test_plaintext_is_refused_off_loopback(
    database: Database, broker: EmbeddedMosquitto
) -> None:
    with pytest.raises(PlaintextRefused):
        await start_server(server_settings(database, broker, grpc_host="0.0.0.0"))


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


async def test_tls_serves_when_a_certificate_is_configured(
    database: Database,
    broker: EmbeddedMosquitto,
    owner_conn: asyncpg.Connection,
    tmp_path: Path,
) -> None:
    cert_file, key_file = _self_signed(tmp_path)
    running = await start_server(
        server_settings(database, broker, tls_cert_file=cert_file, tls_key_file=key_file)
    )
    try:
        account = await make_account(owner_conn, "viewer", await factories.make_client(owner_conn))
        credentials = grpc.ssl_channel_credentials(root_certificates=cert_file.read_bytes())
        async with grpc.aio.secure_channel(
            f"localhost:{running.grpc_port}", credentials
        ) as channel:
            stub = auth_stub(channel)
            reply = await stub.Login(
                auth_pb2.LoginRequest(email=account.email, password=PASSWORD), timeout=10
            )
        assert reply.user.id == str(account.user_id)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.grpc_port}") as plain:
            with pytest.raises(grpc.aio.AioRpcError):
                await auth_stub(plain).Login(auth_pb2.LoginRequest(), timeout=3)
    finally:
        await running.stop(1)


def auth_stub(channel: grpc.aio.Channel) -> Any:
    from lifebox.v1 import auth_pb2_grpc

    return auth_pb2_grpc.AuthServiceStub(channel)
