"""The webhook contract: its JSON body, headers and signature.

Body (UTF-8 JSON, keys as below; README "### Reactions")::

    {"delivery_id": job id (the same on every retry: deduplicate on it),
     "sent_at": RFC 3339 time of this attempt (also X-LifeBox-Timestamp),
     "change": "raised" | "cleared", "attempt": 1.., "rule": {"id", "name"},
     "event": {"id", "status", "severity", "raise_time", "clear_time", "trigger_value",
               "clear_value", "message"},
     "device": {"id", "serial", "name"}}

Headers: ``X-LifeBox-Signature: sha256=<hex HMAC-SHA256 of the body>``, keyed with the
rule's secret as the API returned it (64 hex characters, as UTF-8);
``X-LifeBox-Timestamp``: Unix seconds of ``sent_at`` (a receiver refuses one too far from
its clock; ``sent_at`` is in the signed body, so a replay cannot move it);
``X-LifeBox-Delivery``: the delivery id.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime
from typing import Any

from lifebox_grpc.store.alarm_reactions import EventView, Job

SIGNATURE_HEADER = "X-LifeBox-Signature"
TIMESTAMP_HEADER = "X-LifeBox-Timestamp"
DELIVERY_HEADER = "X-LifeBox-Delivery"


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def webhook_body(job: Job, event: EventView, sent_at: datetime) -> bytes:
    body: dict[str, Any] = {
        "delivery_id": str(job.id),
        "sent_at": sent_at.isoformat(),
        "change": "raised" if job.phase == "raise" else "cleared",
        "attempt": job.attempt,
        "rule": {"id": str(job.rule_id), "name": job.rule_name},
        "event": {
            "id": str(job.event_id),
            "status": event.status,
            "severity": event.severity,
            "raise_time": _time(event.raised_at),
            "clear_time": _time(event.cleared_at),
            "trigger_value": event.trigger_value,
            "clear_value": event.clear_value,
            "message": event.message or "",
        },
        "device": {
            "id": str(job.device_id),
            "serial": event.device_serial,
            "name": event.device_name,
        },
    }
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


def secret_text(secret: bytes) -> str:
    """The secret as the API returns it once, and as receivers key their HMAC with."""
    return secret.hex()


def signature(secret: bytes, body: bytes) -> str:
    key = secret_text(secret).encode()
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def webhook_headers(job: Job, secret: bytes, body: bytes, sent_at: datetime) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "User-Agent": "LifeBox-Alarms/1",
        SIGNATURE_HEADER: signature(secret, body),
        TIMESTAMP_HEADER: str(int(sent_at.timestamp())),
        DELIVERY_HEADER: str(job.id),
    }


def verify(secret: bytes, body: bytes, header: str) -> bool:
    """What a receiver does (and the tests): constant-time comparison of the signature."""
    return hmac.compare_digest(signature(secret, body), header)
