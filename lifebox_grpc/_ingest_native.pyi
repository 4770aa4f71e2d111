# Hand-written stub of the Rust extension (ingest_native/src/lib.rs); checked by
# `python -m mypy.stubtest lifebox_grpc._ingest_native`. Only lifebox_grpc.native imports it.

from typing import final
from uuid import UUID

__all__ = ["Decoder", "LimitsError", "NativeError", "columns", "version"]

class NativeError(Exception):
    """A call the native ingest core refuses."""

class LimitsError(NativeError):
    """Decode limits out of range."""

def version() -> str: ...
def columns() -> list[tuple[str, str]]:
    """`telemetry_events` columns in COPY order, as (name, PostgreSQL type)."""

@final
class Decoder:
    """Decodes batches under fixed limits; safe to share between threads."""

    def __new__(
        cls,
        max_payload_bytes: int,
        max_readings_per_message: int,
        max_extra_keys: int,
        max_depth: int,
        max_string_bytes: int,
        max_past_seconds: int,
        max_future_seconds: int,
    ) -> Decoder: ...
    def decode(
        self, messages: list[tuple[UUID | bytes, UUID | bytes, int, bytes]], now_us: int
    ) -> tuple[
        bytes,  # copy_data
        int,  # rows
        list[tuple[int, int | None, str, str]],  # rejects: message, reading, code, reason
        # unknown fields, per device: (index of a message of the device, name, json type,
        # count, example)
        list[tuple[int, str, str, int, str]],
        dict[UUID | bytes, int],  # latest_us: the caller's device id object -> unix us
        bytes,  # row_times_us: little-endian i64 per row
        list[int],  # rows_per_message
    ]:
        """Decodes `(device_id, client_id, received_at_us, payload)` messages; ids are
        `uuid.UUID` or their 16 bytes."""
