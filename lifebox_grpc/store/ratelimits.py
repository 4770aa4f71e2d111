"""Attempt counters shared by every replica (table ``auth_rate_limits``, migration 0020)."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg


@dataclass(frozen=True)
class WindowCount:
    """Attempts counted in the bucket's current window, and seconds until it restarts."""

    attempts: int
    resets_in: float


async def count_attempt(conn: asyncpg.Connection, bucket: str, window_seconds: int) -> WindowCount:
    """Count one attempt in ``bucket``; a window older than ``window_seconds`` restarts.

    One statement, so concurrent attempts on any replica are all counted.
    """
    row = await conn.fetchrow(
        """
        INSERT INTO auth_rate_limits AS r (bucket, window_start, attempts)
        VALUES ($1, now(), 1)
        ON CONFLICT (bucket) DO UPDATE SET
            window_start = CASE WHEN r.window_start <= now() - make_interval(secs => $2)
                THEN now() ELSE r.window_start END,
            attempts = CASE WHEN r.window_start <= now() - make_interval(secs => $2)
                THEN 1 ELSE r.attempts + 1 END
        RETURNING attempts,
            extract(epoch FROM window_start + make_interval(secs => $2) - now())::float8
                AS resets_in
        """,
        bucket,
        window_seconds,
    )
    assert row is not None
    return WindowCount(int(row["attempts"]), max(0.0, float(row["resets_in"])))


async def clear_bucket(conn: asyncpg.Connection, bucket: str) -> None:
    await conn.execute("DELETE FROM auth_rate_limits WHERE bucket = $1", bucket)


async def delete_stale(conn: asyncpg.Connection, older_than_seconds: int) -> int:
    """Forget windows that ended long ago; returns how many rows went."""
    result = await conn.execute(
        "DELETE FROM auth_rate_limits WHERE window_start < now() - make_interval(secs => $1)",
        older_than_seconds,
    )
    return int(result.split()[-1])
