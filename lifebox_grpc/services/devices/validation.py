"""DeviceService: checks of device fields and update masks shared by its RPCs."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from google.protobuf import json_format, struct_pb2

from lifebox_grpc.errors import ErrorCollector
from lifebox_grpc.serials import is_reserved_serial, is_valid_serial
from lifebox_grpc.services.common import check_text

MAX_NAME = 200
MAX_SHORT_TEXT = 100
MAX_REASON = 500
MAX_METADATA_BYTES = 16_384
MAX_INTERVAL_S = 7 * 86_400
MAX_BATCH = 10_000
DEVICE_TYPE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
METADATA_KEY = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
DEVICE_MASK_FIELDS = (
    "name",
    "device_type",
    "model",
    "firmware_version",
    "status",
    "expected_interval_seconds",
    "metadata",
)


def metadata_of(errors: ErrorCollector, field: str, value: struct_pb2.Struct) -> dict[str, Any]:
    data: dict[str, Any] = json_format.MessageToDict(value)
    for key in data:
        if not METADATA_KEY.match(key):
            errors.add(field, f"key {key[:70]!r}: 1-64 letters, digits, '_' or '-'")
    if len(json.dumps(data)) > MAX_METADATA_BYTES:
        errors.add(field, f"must be at most {MAX_METADATA_BYTES} bytes as JSON")
    return data


def check_serial(errors: ErrorCollector, field: str, serial: str) -> None:
    if not serial:
        errors.add(field, "required")
    # --- credentials (issue 13): a serial is a broker username, never a service account's ---
    elif is_reserved_serial(serial):
        errors.add(field, "must not start with 'lifebox-': it names the broker's own accounts")
    # --- end credentials (issue 13) ---
    elif not is_valid_serial(serial):  # the CHECK on devices.serial: one MQTT topic level
        errors.add(field, "1-64 letters, digits, '_', '.', ':' or '-', starting alphanumeric")


def check_type(errors: ErrorCollector, field: str, device_type: str) -> None:
    if not DEVICE_TYPE.match(device_type):
        errors.add(field, "1-64 lowercase letters, digits, '_' or '-'")


def check_interval(errors: ErrorCollector, field: str, seconds: int) -> None:
    if not 1 <= seconds <= MAX_INTERVAL_S:
        errors.add(field, f"must be 1 to {MAX_INTERVAL_S} seconds")


def optional_text(errors: ErrorCollector, field: str, value: str) -> str | None:
    check_text(errors, field, value, max_length=MAX_SHORT_TEXT, required=False)
    return value or None


def device_mask(errors: ErrorCollector, paths: Sequence[str]) -> tuple[list[str], list[str]]:
    """The mask's field paths and its metadata.KEY keys; a violation per bad path."""
    plain: list[str] = []
    keys: list[str] = []
    for path in dict.fromkeys(paths):
        if path in DEVICE_MASK_FIELDS:
            plain.append(path)
        elif path.startswith("metadata.") and METADATA_KEY.match(path[len("metadata.") :]):
            keys.append(path[len("metadata.") :])
        else:
            errors.add("update_mask", f"unknown or read-only path {path[:80]!r}")
    if not paths:
        errors.add("update_mask", f"name at least one of: {', '.join(DEVICE_MASK_FIELDS)}")
    if "metadata" in plain and keys:
        errors.add("update_mask", "name either metadata or metadata.KEY paths, not both")
    return plain, keys
