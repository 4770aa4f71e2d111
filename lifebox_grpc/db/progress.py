"""Progress of long work on stderr: one rewritten line on a terminal, a line per step in a
log (so a CI job or `docker logs` shows how far it got)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """``[done/total] what`` with the elapsed time; ``total`` 0 means unknown."""

    def __init__(self, label: str, total: int = 0, stream: TextIO | None = None) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self.stream = stream or sys.stderr
        self.started = time.monotonic()
        self._tty = self.stream.isatty()

    def step(self, what: str) -> None:
        self.done += 1
        self.show(what)

    def show(self, what: str) -> None:
        """Say what is happening now without counting a step."""
        shown = min(self.done, self.total) if self.total else self.done
        count = f"{shown}/{self.total}" if self.total else str(shown)
        line = f"{self.label} [{count}] {time.monotonic() - self.started:6.1f}s {what}"
        if self._tty:
            self.stream.write("\r\033[K" + line[:120])
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def finish(self, summary: str) -> None:
        elapsed = time.monotonic() - self.started
        self.stream.write(("\r\033[K" if self._tty else "") + f"{summary} in {elapsed:.1f}s\n")
        self.stream.flush()
