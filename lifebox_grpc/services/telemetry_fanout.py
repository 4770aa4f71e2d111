"""StreamTelemetry's hub is the process's stream engine now (issue 21).

The LISTEN connection, the once-per-process reads of announced commits and the bounded
per-stream buffers live in :mod:`lifebox_grpc.streams`; this name stays only because the
servicer's wiring imports it.
"""

from __future__ import annotations

from lifebox_grpc.streams.telemetry import TelemetryHub as TelemetryFanout

__all__ = ["TelemetryFanout"]
