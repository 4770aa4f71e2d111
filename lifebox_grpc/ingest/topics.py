"""The device side of the MQTT contract: which topics ingest reads and what they name.

A topic is checked before anything keeps it: one longer than any LifeBox topic is cut at
receipt (:data:`KEPT_TOPIC_CHARS`) and never enters a cache, and the serial level must be a
device serial (:mod:`lifebox_grpc.serials`, the ``devices.serial`` CHECK) before it is looked
up or stored.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

from lifebox_grpc.serials import MAX_SERIAL, is_valid_serial

PREFIX = "lifebox/v1/"
SHARE_GROUP = "lifebox-ingest"
SUBSCRIPTIONS = (
    "lifebox/v1/+/telemetry",
    "lifebox/v1/+/alarms",
    "lifebox/v1/+/commands/+/ack",
    # --- presence (issue 13) ---
    "lifebox/v1/+/status",
)
# The longest spelling of a command id uuid.UUID takes ("urn:uuid:" + 36 characters).
MAX_COMMAND_ID = 45
# The longest topic that can be ours: an ack topic with the longest serial and command id.
MAX_TOPIC = len(PREFIX) + MAX_SERIAL + len("/commands/") + MAX_COMMAND_ID + len("/ack")
# What ingest keeps of a topic (at receipt, and in a stored reject): longer ones are not ours.
KEPT_TOPIC_CHARS = 256
CACHED_TOPICS = 1 << 14


class TopicKind(StrEnum):
    TELEMETRY = "telemetry"
    ALARM = "alarm"
    ACK = "ack"
    STATUS = "status"  # presence (issue 13)


@dataclass(frozen=True)
class ParsedTopic:
    kind: TopicKind
    serial: str
    command_id: uuid.UUID | None = None


@dataclass(frozen=True)
class TopicReject:
    """A topic ingest can't take: the reject code and reason, and the serial level as far as
    it can be stored (at most :data:`MAX_SERIAL` characters; "" when there is none)."""

    code: str  # "invalid_serial" or "unknown_topic"
    reason: str
    serial: str = ""


_NOT_OURS = TopicReject("unknown_topic", "not a LifeBox device topic")
_BAD_SERIAL = (
    "the serial level is not a device serial (1-64 letters, digits, '_', '.', ':' or '-', "
    "starting with a letter or digit)"
)


def shared(topic: str, group: str = SHARE_GROUP) -> str:
    """The MQTT 5 shared-subscription filter: workers of one group split the messages."""
    return f"$share/{group}/{topic}"


def parse_topic(topic: str) -> ParsedTopic | TopicReject:
    """What a device topic names, or why it is a reject.

    Topics up to :data:`MAX_TOPIC` characters are cached (a device publishes on the same few
    topics, so the hot path parses each once; the cache is bounded); longer ones can't be
    ours and are refused without being kept."""
    if len(topic) > MAX_TOPIC:
        return _too_long(topic)
    return _parse(topic)


def _too_long(topic: str) -> TopicReject:
    if not topic.startswith(PREFIX):
        return _NOT_OURS
    # Only as much of the serial level as decides it (a valid one ends by character 65).
    head = topic[len(PREFIX) : len(PREFIX) + MAX_SERIAL + 1].partition("/")[0]
    if not is_valid_serial(head):
        return TopicReject("invalid_serial", _BAD_SERIAL, head[:MAX_SERIAL])
    return TopicReject("unknown_topic", f"topic longer than {MAX_TOPIC} characters", head)


@lru_cache(maxsize=CACHED_TOPICS)
def _parse(topic: str) -> ParsedTopic | TopicReject:
    if not topic.startswith(PREFIX):
        return _NOT_OURS
    serial, _, rest = topic[len(PREFIX) :].partition("/")
    if not is_valid_serial(serial):
        return TopicReject("invalid_serial", _BAD_SERIAL, serial[:MAX_SERIAL])
    if rest == "telemetry":
        return ParsedTopic(TopicKind.TELEMETRY, serial)
    if rest == "alarms":
        return ParsedTopic(TopicKind.ALARM, serial)
    if rest == "status":  # presence (issue 13)
        return ParsedTopic(TopicKind.STATUS, serial)
    parts = rest.split("/")
    if (
        len(parts) == 3
        and parts[0] == "commands"
        and parts[2] == "ack"
        and len(parts[1]) <= MAX_COMMAND_ID
    ):
        try:
            return ParsedTopic(TopicKind.ACK, serial, uuid.UUID(parts[1]))
        except ValueError:
            pass
    return TopicReject(_NOT_OURS.code, _NOT_OURS.reason, serial)
