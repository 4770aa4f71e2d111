"""The small HTTP listener beside gRPC: health, Prometheus metrics (and later webhooks)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest


def build_http_app(is_healthy: Callable[[], Awaitable[bool]]) -> web.Application:
    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        ok = await is_healthy()
        return web.json_response(
            {"status": "ok" if ok else "unavailable"}, status=200 if ok else 503
        )

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    return app


async def start_http(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start the listener; return the runner (to clean up) and the bound port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else port
    return runner, int(bound)


# --- billing (issue 16): the Fawry webhook joins this listener in dev, or gets a public
# listener of its own (fawry_webhook_port; required in prod) that serves nothing else ---
class _Runners:
    """Several listeners cleaned up as one."""

    def __init__(self, runners: list[web.AppRunner]) -> None:
        self.runners = runners

    async def cleanup(self) -> None:
        for runner in reversed(self.runners):
            await runner.cleanup()


async def start_http_listeners(
    is_healthy: Callable[[], Awaitable[bool]], settings: Any, pool: Any
) -> tuple[Any, int]:
    """The internal listener (health, metrics) and, with billing configured, the Fawry
    webhook on it or on its own port; returns (runner to clean up, internal port)."""
    from lifebox_grpc.billing.fawry import FawryClient
    from lifebox_grpc.billing.webhook import add_fawry_webhook

    app = build_http_app(is_healthy)
    key = settings.fawry_secure_key
    fawry = None
    if settings.fawry_active and key is not None:
        fawry = FawryClient(
            settings.fawry_base_url,
            settings.fawry_merchant_code,
            key.get_secret_value(),
            timeout=settings.fawry_timeout_seconds,
        )
    limit = settings.fawry_webhook_max_bytes
    if fawry is not None and settings.fawry_webhook_port is None:
        add_fawry_webhook(app, pool, fawry, limit)
    runner, port = await start_http(app, settings.http_host, settings.http_port)
    runners = [runner]
    if fawry is not None and settings.fawry_webhook_port is not None:
        public = web.Application(client_max_size=limit + 1)
        add_fawry_webhook(public, pool, fawry, limit)
        webhook_runner, _ = await start_http(
            public, settings.fawry_webhook_host, settings.fawry_webhook_port
        )
        runners.append(webhook_runner)
    return _Runners(runners), port


# --- end billing (issue 16) ---
