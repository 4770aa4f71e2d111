"""`POST /webhooks/fawry`: Fawry's server notification V2.

Answers (Fawry retries anything but 200, so retries are the recovery path):

* 200: processed and committed (credited, refunded, no change), a duplicate of a verified
  notification already processed, or one that can never apply (unknown merchant reference,
  amount or reference mismatch): stored with the reason, nothing credited.
* 400: malformed (not JSON, a field missing or of the wrong type): logged and counted, not
  stored (there is no reference to store it under); or a signature that does not verify:
  stored with ``signature_valid = false``, counted, nothing credited.
* 413: a body over ``fawry_webhook_max_bytes``: refused unread.
* 503: Fawry's status query could not confirm it yet (unreachable, or behind the
  notification): stored, not applied; Fawry's retry applies it.
"""

from __future__ import annotations

import logging

import asyncpg
from aiohttp import web

from lifebox_grpc import metrics
from lifebox_grpc.billing.fawry import FawryClient, MalformedNotice, Notice, parse_json
from lifebox_grpc.billing.payments import apply_notification

log = logging.getLogger(__name__)

PATH = "/webhooks/fawry"


def add_fawry_webhook(
    app: web.Application, pool: asyncpg.Pool, fawry: FawryClient, max_bytes: int
) -> None:
    """Mount the webhook on ``app`` (whose client_max_size must allow ``max_bytes``)."""

    async def receive(request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > max_bytes:
            return _answer(413, "too_large")
        body = await request.content.read(max_bytes + 1)
        if len(body) > max_bytes:
            return _answer(413, "too_large")
        try:
            notice = Notice.from_json(parse_json(body))
        except (ValueError, MalformedNotice, RecursionError) as exc:
            log.warning("fawry notification malformed", extra={"error": str(exc)[:200]})
            return _answer(400, "malformed")
        try:
            raw = body.decode("utf-8")
        except UnicodeDecodeError:
            return _answer(400, "malformed")
        outcome = await apply_notification(pool, fawry, notice, raw)
        if outcome.outcome == "bad_signature":
            log.warning(
                "fawry notification with a bad signature stored, not applied",
                extra={"fawry_ref": notice.fawry_ref_number[:64]},
            )
        return _answer(outcome.http_status, outcome.outcome)

    app.router.add_post(PATH, receive)


def _answer(status: int, outcome: str) -> web.Response:
    metrics.FAWRY_NOTIFICATIONS.labels(outcome).inc()
    return web.json_response({"outcome": outcome}, status=status)
