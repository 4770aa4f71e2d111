"""The per-stream buffer limit, set from ``LIFEBOX_STREAM_BUFFER_ITEMS`` when serve starts.

Module state rather than an argument threaded through every servicer: it is one number for
the whole process, read when a stream subscribes.
"""

from __future__ import annotations

DEFAULT_BUFFER_ITEMS = 100_000
_buffer_items = DEFAULT_BUFFER_ITEMS


def buffer_limit() -> int:
    """What one stream may have queued (telemetry: rows; other streams: notices)."""
    return _buffer_items


def configure(buffer_items: int) -> None:
    global _buffer_items
    _buffer_items = buffer_items
