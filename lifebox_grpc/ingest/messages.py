"""Decoding of the low-volume device messages (alarms and command acks) in Python.

Telemetry goes through the native core; these are rare enough that clarity wins.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

SEVERITIES = ("info", "warning", "minor", "major", "critical")
ACK_STATUSES = ("received", "accepted", "rejected", "completed", "failed")
MAX_CODE = 128
MAX_MESSAGE = 1024
MAX_PAYLOAD = 64 * 1024


def _storable(value: object) -> bool:
    """False when a string (or key) holds NUL or an unpaired surrogate (from an escaped
    ``\\u0000`` or ``\\ud800``): PostgreSQL text and jsonb can hold neither."""
    if isinstance(value, str):
        if "\x00" in value:
            return False
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, dict):
        return all(_storable(k) and _storable(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_storable(v) for v in value)
    return True


class MessageError(ValueError):
    """A device message that can't be accepted; `code` is the stable reject label."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class Alarm:
    code: str
    severity: str
    message: str | None
    raised_at: datetime
    cleared_at: datetime | None
    payload: str


@dataclass(frozen=True)
class Ack:
    status: str
    result: str | None
    device_time: datetime | None


def _reject_constant(name: str) -> object:
    raise MessageError("non_finite", f"{name} is not a JSON number")


def _object(payload: bytes) -> dict[str, object]:
    if len(payload) > MAX_PAYLOAD:
        raise MessageError("too_large", f"payload over {MAX_PAYLOAD} bytes")
    try:
        text = payload.decode("utf-8")
        value = json.loads(text, parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        raise MessageError("invalid_utf8", f"payload is not UTF-8: {exc.reason}") from exc
    except MessageError:
        raise
    except RecursionError as exc:  # hostile nesting: a reject, never a crashed worker
        raise MessageError("too_deep", "JSON nested too deeply") from exc
    except ValueError as exc:
        raise MessageError("invalid_json", f"invalid JSON: {exc}") from exc
    if not _storable(value):
        raise MessageError("invalid_string", "NUL or unpaired surrogate in a string")
    if not isinstance(value, dict):
        raise MessageError("not_object", "expected a JSON object")
    return value


def _time(value: object, name: str, default: datetime | None) -> datetime | None:
    if value is None:
        return default
    if isinstance(value, bool):
        raise MessageError("type_error", f"field {name}: expected a timestamp")
    if isinstance(value, int):
        try:
            return datetime.fromtimestamp(value / 1000, UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise MessageError("ts_invalid", f"field {name}: {value} out of range") from exc
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError as exc:
            raise MessageError("ts_invalid", f"field {name}: not RFC 3339: {value!r}") from exc
        if parsed.tzinfo is None:
            raise MessageError("ts_invalid", f"field {name}: needs a UTC offset")
        return parsed
    raise MessageError("type_error", f"field {name}: expected a timestamp")


def _text(value: object, name: str, limit: int, required: bool) -> str | None:
    if value is None:
        if required:
            raise MessageError("missing_field", f"field {name} is required")
        return None
    if not isinstance(value, str):
        raise MessageError("type_error", f"field {name}: expected string")
    if not value or len(value) > limit:
        raise MessageError("string_too_long", f"field {name}: 1 to {limit} characters")
    return value


def decode_alarm(payload: bytes, received_at: datetime) -> Alarm:
    """``{"code": "...", "severity": "major", "message": "...", "ts": …, "cleared": bool}``."""
    body = _object(payload)
    code = _text(body.get("code"), "code", MAX_CODE, required=True)
    severity = body.get("severity", "warning")
    if severity not in SEVERITIES:
        raise MessageError("invalid_value", f"field severity: one of {', '.join(SEVERITIES)}")
    raised_at = _time(body.get("ts"), "ts", received_at)
    cleared = body.get("cleared", False)
    if not isinstance(cleared, bool):
        raise MessageError("type_error", "field cleared: expected boolean")
    assert code is not None
    assert raised_at is not None
    return Alarm(
        code=code,
        severity=str(severity),
        message=_text(body.get("message"), "message", MAX_MESSAGE, required=False),
        raised_at=raised_at,
        cleared_at=raised_at if cleared else None,
        payload=json.dumps(body),
    )


def decode_ack(payload: bytes) -> Ack:
    """``{"status": "completed", "result": {...}, "ts": …}``."""
    body = _object(payload)
    status = body.get("status")
    if status not in ACK_STATUSES:
        raise MessageError("invalid_value", f"field status: one of {', '.join(ACK_STATUSES)}")
    result = body.get("result")
    return Ack(
        status=str(status),
        result=json.dumps(result) if result is not None else None,
        device_time=_time(body.get("ts"), "ts", None),
    )
