"""Structured logs: a real `lifebox serve` in prod mode writes one JSON object per line, with
request id, principal, method, status and latency for every call, and never a secret; dev
writes readable lines with the same fields."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from pathlib import Path

import asyncpg
import grpc
import pytest

from lifebox.v1 import auth_pb2, auth_pb2_grpc
from lifebox_grpc.config import Mode, Settings
from lifebox_grpc.logs import JsonFormatter, TextFormatter
from lifebox_grpc.runtime.ports import free_port, wait_for_port
from tests.helpers import factories
from tests.helpers.grpc import PASSWORD, bearer, make_account
from tests.helpers.services import Database

pytestmark = pytest.mark.timeout(120)
JWT_KEY = "json-logs-test-signing-key-" + "k" * 20
REQUEST_ID = "logs-test-request-0001"


async def test_serve_in_prod_logs_one_json_object_per_line_per_call(
    database: Database, tmp_path: Path
) -> None:
    owner = await asyncpg.connect(database.owner_dsn)
    try:
        account = await make_account(owner, "client", await factories.make_client(owner))
    finally:
        await owner.close()
    grpc_port, http_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIFEBOX_")} | {
        "LIFEBOX_MODE": "prod",
        "LIFEBOX_DATABASE_URL": database.app_dsn,
        "LIFEBOX_JWT_SIGNING_KEY": JWT_KEY,
        "LIFEBOX_GRPC_PORT": str(grpc_port),
        "LIFEBOX_HTTP_PORT": str(http_port),
        "LIFEBOX_HOME": str(tmp_path / "home"),
        "LIFEBOX_LOG_LEVEL": "info",
        # The session's other tests sign in from this same address; the per-address limit
        # is not under test here.
        "LIFEBOX_LOGIN_ATTEMPTS_PER_ADDRESS": "100000",
    }
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log_file:
        serve = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "lifebox_grpc.cli",
            "serve",
            env=env,
            stdout=log_file,
            stderr=asyncio.subprocess.STDOUT,
        )
    try:
        assert wait_for_port(grpc_port, timeout=60), log_path.read_text()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            auth = auth_pb2_grpc.AuthServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await auth.Login(
                    auth_pb2.LoginRequest(email=account.email, password="not-the-password"),
                    timeout=10,
                )
            assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
            reply = await auth.Login(
                auth_pb2.LoginRequest(email=account.email, password=PASSWORD), timeout=10
            )
            tokens = reply.tokens
            await auth.GetMe(
                auth_pb2.GetMeRequest(),
                metadata=(*bearer(tokens.access_token), ("x-request-id", REQUEST_ID)),
                timeout=10,
            )
    finally:
        serve.terminate()
        await asyncio.wait_for(serve.wait(), 30)
    text = log_path.read_text()
    records = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert records, "serve wrote no log line"
    assert all({"ts", "level", "logger", "msg"} <= set(r) for r in records)
    calls = [r for r in records if r["logger"] == "lifebox.access"]
    by_method = {(r["method"], r["code"]): r for r in calls}
    refused_line = by_method[("Login", "UNAUTHENTICATED")]
    assert refused_line["principal"] == "-"
    get_me = by_method[("GetMe", "OK")]
    assert get_me["request_id"] == REQUEST_ID
    assert get_me["principal"] == f"{account.user_id}/client"
    assert get_me["service"] == "lifebox.v1.AuthService"
    assert isinstance(get_me["latency_ms"], float | int)
    assert get_me["latency_ms"] >= 0
    assert len({r["request_id"] for r in calls}) == len(calls)  # one id per call
    for secret in (
        PASSWORD,
        "not-the-password",
        tokens.access_token,
        tokens.refresh_token,
        JWT_KEY,
        database.server.passwords.app,
    ):
        assert secret not in text


def test_dev_logs_are_readable_lines_with_the_same_fields() -> None:
    record = logging.makeLogRecord(
        {
            "name": "lifebox.access",
            "levelno": logging.INFO,
            "levelname": "INFO",
            "msg": "lifebox.v1.AuthService/GetMe OK",
            "request_id": REQUEST_ID,
            "method": "GetMe",
            "code": "OK",
            "latency_ms": 1.5,
            "principal": "u/client",
        }
    )
    line = TextFormatter().format(record)
    assert line.count("\n") == 0
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)
    for field in (f"request_id={REQUEST_ID}", "method=GetMe", "code=OK", "latency_ms=1.5"):
        assert field in line
    assert json.loads(JsonFormatter().format(record))["request_id"] == REQUEST_ID
    assert Settings(mode=Mode.DEV).effective_log_format.value == "text"
    assert Settings(mode=Mode.PROD).effective_log_format.value == "json"
