"""Issue 18: a batch's commit announcement (the NOTIFY live streams follow) is part of its
transaction. An ingest that dies after COMMIT, before its deferred facts flush (last seen,
catalogue), cannot make a live stream miss the batch: the pipeline here never flushes its
facts, as a worker SIGKILLed right after the commit never would."""

from __future__ import annotations

import asyncpg

from lifebox_grpc.ingest.pipeline import Pipeline
from tests.helpers.grpc import Server
from tests.test_telemetry_stream_commits import (  # noqa: F401 (fixtures)
    OneDevice,
    batch,
    one_device,
    open_streams,
    pipeline,
    read_exactly,
)


async def test_committed_rows_reach_live_streams_once_without_a_facts_flush(
    one_device: OneDevice,  # noqa: F811 (fixture)
    grpc_server: Server,
    owner_conn: asyncpg.Connection,
    pipeline: Pipeline,  # noqa: F811 (fixture)
) -> None:
    client_id, device, serial, base = one_device
    live, since = await open_streams(grpc_server, owner_conn, client_id, device, base)
    newer = [base + 10_000 + i * 1000 for i in range(4)]
    older = [base + i * 1000 for i in range(3)]
    for times in (newer, older):
        await pipeline.process(batch(serial, times))
    assert pipeline.facts.pending, "the deferred facts were never written"
    # Every committed reading, once each, in commit order; nothing more.
    assert await read_exactly(live, 7) == newer + older
    assert await read_exactly(since, 7) == newer + older
    pipeline.stop.set()  # the deferred facts die with this "process"
    live.cancel()
    since.cancel()
