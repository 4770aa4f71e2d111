"""DeviceService: page tokens on (time, id) keys, newest first."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Protocol, TypeVar

from lifebox_grpc.errors import ErrorCollector
from lifebox_grpc.services.common import (
    decode_page_token,
    encode_page_token,
)


def parse_time(errors: ErrorCollector, value: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        errors.add("page_token", "is not a token this API returned")
        return None
    return parsed


def time_id_token(time: datetime, row_id: uuid.UUID) -> str:
    return encode_page_token([time.isoformat(), str(row_id)])


def time_id_cursor(errors: ErrorCollector, token: str) -> tuple[datetime, uuid.UUID] | None:
    key = decode_page_token(errors, token, 2)
    if key is None:
        return None
    when = parse_time(errors, key[0])
    try:
        row_id = uuid.UUID(key[1])
    except ValueError:
        errors.add("page_token", "is not a token this API returned")
        return None
    return (when, row_id) if when is not None else None


class _Keyed(Protocol):
    @property
    def id(self) -> uuid.UUID: ...


Row = TypeVar("Row", bound=_Keyed)


def time_id_page(
    rows: Sequence[Row], size: int, time_of: Callable[[Row], datetime]
) -> tuple[Sequence[Row], str]:
    """The page (the store fetched ``size + 1`` rows) and the token of the next one."""
    page = rows[:size]
    more = len(rows) > size
    return page, time_id_token(time_of(page[-1]), page[-1].id) if more else ""
