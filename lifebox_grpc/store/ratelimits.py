"""Attempt counters shared by every replica (table ``auth_rate_limits``, migration 0020)."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg


@dataclass(frozen=True)
class WindowCount:
    """Attempts counted in the bucket's current window, and seconds until it restarts."""

    attempts: int
    resets_in: float


_COUNT_SQL = """
INSERT INTO auth_rate_limits AS r (bucket, window_start, attempts)
VALUES ($1, now(), 1)
ON CONFLICT (bucket) DO UPDATE SET
    window_start = CASE
        WHEN r.window_start <= now() - make_interval(secs => $2) THEN now()
        WHEN r.attempts + 1 = $3 THEN now()
        ELSE r.window_start END,
    attempts = CASE WHEN r.window_start <= now() - make_interval(secs => $2)
        THEN 1 ELSE r.attempts + 1 END
RETURNING attempts,
    extract(epoch FROM window_start + make_interval(secs => $2) - now())::float8 AS resets_in
"""


async def count_attempt(
    conn: asyncpg.Connection, bucket: str, window_seconds: int, *, restart_at: int | None = None
) -> WindowCount:
    """Count one attempt in ``bucket``; a window older than ``window_seconds`` restarts.

    With ``restart_at``, the attempt that brings the count to it also restarts the window's
    clock (keeping the count): whatever is refused past that count stays refused for a whole
    window from then. One statement, so concurrent attempts on any replica are all counted.
    """
    row = await conn.fetchrow(_COUNT_SQL, bucket, window_seconds, restart_at)
    assert row is not None
    return WindowCount(int(row["attempts"]), max(0.0, float(row["resets_in"])))


async def current_attempts(conn: asyncpg.Connection, bucket: str, window_seconds: int) -> int:
    """Attempts in the bucket's current window, without counting one (0 once it has passed)."""
    value = await conn.fetchval(
        "SELECT attempts FROM auth_rate_limits "
        "WHERE bucket = $1 AND window_start > now() - make_interval(secs => $2)",
        bucket,
        window_seconds,
    )
    return int(value or 0)


async def clear_bucket(conn: asyncpg.Connection, bucket: str) -> None:
    await conn.execute("DELETE FROM auth_rate_limits WHERE bucket = $1", bucket)


async def delete_stale(conn: asyncpg.Connection, older_than_seconds: int) -> int:
    """Forget windows that ended long ago; returns how many rows went."""
    result = await conn.execute(
        "DELETE FROM auth_rate_limits WHERE window_start < now() - make_interval(secs => $1)",
        older_than_seconds,
    )
    return int(result.split()[-1])
