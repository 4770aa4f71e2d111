"""The device side of the MQTT contract: which topics ingest reads and what they name."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

PREFIX = "lifebox/v1/"
SHARE_GROUP = "lifebox-ingest"
SUBSCRIPTIONS = (
    "lifebox/v1/+/telemetry",
    "lifebox/v1/+/alarms",
    "lifebox/v1/+/commands/+/ack",
)


class TopicKind(StrEnum):
    TELEMETRY = "telemetry"
    ALARM = "alarm"
    ACK = "ack"


@dataclass(frozen=True)
class ParsedTopic:
    kind: TopicKind
    serial: str
    command_id: uuid.UUID | None = None


def shared(topic: str, group: str = SHARE_GROUP) -> str:
    """The MQTT 5 shared-subscription filter: workers of one group split the messages."""
    return f"$share/{group}/{topic}"


@lru_cache(maxsize=1 << 16)
def parse_topic(topic: str) -> ParsedTopic | None:
    """What a device topic names, or None when it is not one of ours (a reject).

    Cached: a device publishes on the same few topics, so the hot path parses each once."""
    if not topic.startswith(PREFIX):
        return None
    parts = topic[len(PREFIX) :].split("/")
    if not parts[0]:
        return None
    serial = parts[0]
    if parts[1:] == ["telemetry"]:
        return ParsedTopic(TopicKind.TELEMETRY, serial)
    if parts[1:] == ["alarms"]:
        return ParsedTopic(TopicKind.ALARM, serial)
    if len(parts) == 4 and parts[1] == "commands" and parts[3] == "ack":
        try:
            return ParsedTopic(TopicKind.ACK, serial, uuid.UUID(parts[2]))
        except ValueError:
            return None
    return None
