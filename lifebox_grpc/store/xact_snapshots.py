"""PostgreSQL transaction snapshots (``pg_current_snapshot()::text``) and what they see."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class XactSnapshot:
    """``xmin:xmax:xip``: transactions below ``xmin`` are settled, from ``xmax`` on they had
    not started, and in between those in ``xip`` were still running."""

    xmin: int
    xmax: int
    xip: frozenset[int]

    @classmethod
    def parse(cls, text: str) -> XactSnapshot:
        xmin, xmax, xip = text.split(":")
        return cls(int(xmin), int(xmax), frozenset(int(x) for x in xip.split(",") if x))

    def sees(self, xid: int) -> bool:
        """Whether a *committed* transaction ``xid`` (64-bit) had committed for this snapshot."""
        return xid < self.xmin or (xid < self.xmax and xid not in self.xip)
