"""E-mail reactions: a message about the event, handed to a pluggable sender.

The default (dev) sender writes each message, mode 0600, into the same ``<home>/outbox/``
directory as password resets (:mod:`lifebox_grpc.auth.reset_sender`); a mail sender
implements :class:`MailSender`.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from lifebox_grpc.auth.reset_sender import OUTBOX_DIR
from lifebox_grpc.config import Settings
from lifebox_grpc.store.alarm_reactions import EventView, Job


@dataclass(frozen=True)
class Mail:
    to: tuple[str, ...]
    subject: str
    body: str
    # The delivery id: a sender that deduplicates (or a reader) sees a retry as the same mail.
    delivery_id: str


class MailSender(Protocol):
    """Delivers one message; raises on failure (retried with backoff)."""

    async def send(self, mail: Mail) -> None: ...


def alarm_mail(job: Job, event: EventView) -> Mail:
    verb = "raised" if job.phase == "raise" else "cleared"
    lines = [
        f"Alarm rule {job.rule_name!r} {verb} on device {event.device_name} "
        f"({event.device_serial}).",
        f"Severity: {event.severity}. Status: {event.status}.",
        f"Raised at {event.raised_at.isoformat()}"
        + (f", cleared at {event.cleared_at.isoformat()}." if event.cleared_at else "."),
    ]
    if event.message:
        lines.append(event.message)
    lines.append(f"Event {job.event_id}, delivery {job.id}.")
    return Mail(
        to=job.email_to,
        subject=f"[LifeBox {event.severity}] {job.rule_name} {verb}: {event.device_name}",
        body="\n".join(lines) + "\n",
        delivery_id=str(job.id),
    )


class OutboxMailSender:
    """Writes each message to ``<outbox>/<time>-alarm-<delivery>.txt`` with mode 0600; a
    retry of the same delivery overwrites its file, so the outbox holds it once."""

    def __init__(self, outbox: Path) -> None:
        self.outbox = outbox

    async def send(self, mail: Mail) -> None:
        await asyncio.to_thread(self._write, mail)

    def _write(self, mail: Mail) -> Path:
        self.outbox.mkdir(mode=0o700, parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        final = self.outbox / f"alarm-{mail.delivery_id}.txt"
        tmp = self.outbox / f".{stamp}-{uuid.uuid4().hex[:8]}.tmp"
        text = f"To: {', '.join(mail.to)}\nSubject: {mail.subject}\n\n{mail.body}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, final)
        return final


def mail_sender_from_settings(settings: Settings) -> MailSender:
    return OutboxMailSender(settings.home.resolve() / OUTBOX_DIR)
