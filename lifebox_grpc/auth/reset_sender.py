"""Delivery of password reset links, behind one small interface.

The dev (and default) sender writes each message as a file into ``<home>/outbox/``, mode
0600, so the user of the machine can read it and nobody else can. The token appears only
in that file: never in a log line. A mail sender implements the same :class:`ResetSender`.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from lifebox_grpc.config import Settings

OUTBOX_DIR = "outbox"


@dataclass(frozen=True)
class ResetMessage:
    """What the user receives: where to reset, until when."""

    email: str
    link: str
    expires_at: datetime


class ResetSender(Protocol):
    """Delivers a reset message; raises on failure (the caller logs it, never the link)."""

    async def send(self, message: ResetMessage) -> None: ...


def reset_link(base_url: str, token: str) -> str:
    """The link a user follows. The token rides in the fragment, which browsers never send
    to servers or put in Referer headers."""
    return f"{base_url.rstrip('/')}/reset-password#token={token}"


class OutboxSender:
    """Writes each message to ``<outbox>/<time>-<id>.txt`` with mode 0600."""

    def __init__(self, outbox: Path) -> None:
        self.outbox = outbox

    async def send(self, message: ResetMessage) -> None:
        await asyncio.to_thread(self._write, message)

    def _write(self, message: ResetMessage) -> Path:
        self.outbox.mkdir(mode=0o700, parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        path = self.outbox / f"{stamp}-{uuid.uuid4().hex[:12]}.txt"
        body = (
            f"To: {message.email}\n"
            "Subject: Reset your LifeBox password\n\n"
            "Someone asked to reset the password of this LifeBox account. If it was you, open\n"
            f"{message.link}\n"
            f"before {message.expires_at.isoformat(timespec='seconds')}. The link works once.\n"
            "If it was not you, ignore this message; your password is unchanged.\n"
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(body)
        return path


def sender_from_settings(settings: Settings) -> ResetSender:
    return OutboxSender(settings.home.resolve() / OUTBOX_DIR)
