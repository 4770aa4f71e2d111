"""Where the webhook listens: with a public webhook port (required in prod) it is the only
route there, and /metrics and /healthz stay on the internal listener; prod refuses billing
without its settings; `lifebox dev --fake-fawry`'s fake pays and notifies on its own."""

from __future__ import annotations

import asyncio
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from lifebox_grpc.billing.fawry import ChargeRequest, FawryClient, Notice, parse_json
from lifebox_grpc.config import Settings
from lifebox_grpc.runtime.mosquitto import EmbeddedMosquitto
from lifebox_grpc.runtime.ports import free_port
from tests.helpers.fawry_fake import MERCHANT_CODE, SECURE_KEY, FakeFawry
from tests.helpers.grpc import close_server, open_server, server_settings
from tests.helpers.services import Database

ROOT = Path(__file__).resolve().parents[2]


async def _get(url: str, method: str = "GET") -> int:
    async with aiohttp.ClientSession() as session, session.request(method, url) as reply:
        return reply.status


async def test_a_public_webhook_port_serves_only_the_webhook(
    database: Database, broker: EmbeddedMosquitto, fawry: FakeFawry
) -> None:
    public = free_port("127.0.0.1")
    server = await open_server(
        server_settings(
            database,
            broker,
            fawry_merchant_code=MERCHANT_CODE,
            fawry_secure_key=SECURE_KEY,
            fawry_base_url=fawry.url,
            fawry_webhook_port=public,
        )
    )
    try:
        internal = f"http://127.0.0.1:{server.running.http_port}"
        outside = f"http://127.0.0.1:{public}"
        assert await _get(f"{internal}/metrics") == 200
        assert await _get(f"{outside}/metrics") == 404
        assert await _get(f"{outside}/healthz") == 404
        assert await _get(f"{outside}/webhooks/fawry", "POST") == 400  # there, and empty
        assert await _get(f"{internal}/webhooks/fawry", "POST") in (404, 405)
    finally:
        await close_server(server)


def test_prod_refuses_billing_without_its_settings() -> None:
    base: dict[str, Any] = {
        "mode": "prod",
        "database_url": "postgresql://a:b@h/d",
        "jwt_signing_key": "k" * 40,
    }
    assert Settings(**base).production_problems("serve") == []  # billing off: nothing asked
    problems = Settings(**base, billing_enabled=True).production_problems("serve")
    assert problems == [
        "LIFEBOX_FAWRY_MERCHANT_CODE is required for billing in prod",
        "LIFEBOX_FAWRY_SECURE_KEY is required for billing in prod",
        "LIFEBOX_FAWRY_WEBHOOK_PORT is required in prod: the public webhook listener must not "
        "serve /metrics",
        "LIFEBOX_FAWRY_BASE_URL is Fawry's staging: set the production base "
        "(https://www.atfawry.com) in prod",
    ]
    ready = Settings(
        **base,
        billing_enabled=True,
        fawry_merchant_code="m",
        fawry_secure_key="s" * 32,
        fawry_base_url="https://www.atfawry.com",
        fawry_webhook_port=8443,
    )
    assert ready.production_problems("serve") == []
    assert ready.fawry_active
    assert "s" * 32 not in str(ready.masked())
    assert "s" * 32 not in repr(ready)


async def test_the_dev_fake_pays_each_charge_and_notifies_signed(tmp_path: Path) -> None:
    received: asyncio.Queue[bytes] = asyncio.Queue()

    async def hook(request: web.Request) -> web.Response:
        await received.put(await request.read())
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/webhooks/fawry", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    hook_port = free_port("127.0.0.1")
    await web.TCPSite(runner, "127.0.0.1", hook_port).start()
    fake_port = free_port("127.0.0.1")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "lifebox_grpc.runtime.fake_fawry",
        "--port",
        str(fake_port),
        "--webhook",
        f"http://127.0.0.1:{hook_port}/webhooks/fawry",
        "--pay-after",
        "0.2",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        await asyncio.wait_for(proc.stdout.readline(), 30)  # "fake Fawry on ..."
        client = FawryClient(f"http://127.0.0.1:{fake_port}", MERCHANT_CODE, SECURE_KEY)
        answer = await client.charge(
            ChargeRequest("LBdevcharge01", "p1", "PAYATFAWRY", Decimal("12.50"), "EGP", "dev")
        )
        body = await asyncio.wait_for(received.get(), 30)
        notice = Notice.from_json(parse_json(body))
        assert (notice.fawry_ref_number, notice.order_status) == (answer.reference_number, "PAID")
        assert client.verify(notice)
        confirmed = await client.status("LBdevcharge01")
        assert confirmed.order_status == "PAID"
    finally:
        proc.kill()
        await proc.wait()
        await runner.cleanup()
