"""The status topic's payload: what the device contract accepts, and the reject of the rest."""

from __future__ import annotations

import pytest

from lifebox_grpc.ingest.messages import MessageError
from lifebox_grpc.ingest.topics import ParsedTopic, TopicKind, parse_topic
from lifebox_grpc.presence.status import Status, decode_status


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b'{"state": "online", "session": 7}', Status("online", 7, "connect")),
        (b'{"state": "offline", "session": 7}', Status("offline", 7, "keepalive")),
        (
            b'{"state": "offline", "session": 9223372036854775807, "reason": "clean"}',
            Status("offline", 2**63 - 1, "clean"),
        ),
        (b'{"state": "online", "session": 0, "fw": "1.2"}', Status("online", 0, "connect")),
    ],
)
def test_the_contract_payloads_decode(payload: bytes, expected: Status) -> None:
    assert decode_status(payload) == expected


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"not json", "invalid_json"),
        (b"[1]", "not_object"),
        (b'{"session": 1}', "invalid_value"),
        (b'{"state": "away", "session": 1}', "invalid_value"),
        (b'{"state": "online"}', "missing_field"),
        (b'{"state": "online", "session": "1"}', "type_error"),
        (b'{"state": "online", "session": true}', "type_error"),
        (b'{"state": "online", "session": 1.5}', "type_error"),
        (b'{"state": "online", "session": -1}', "invalid_value"),
        (b'{"state": "online", "session": 9223372036854775808}', "invalid_value"),
        (b'{"state": "online", "session": 1, "reason": "clean"}', "invalid_value"),
        (b'{"state": "offline", "session": 1, "reason": "bored"}', "invalid_value"),
        (b'{"state": "online\\u0000", "session": 1}', "invalid_string"),
    ],
)
def test_anything_else_is_a_reject_with_a_code(payload: bytes, code: str) -> None:
    with pytest.raises(MessageError) as refused:
        decode_status(payload)
    assert refused.value.code == code


def test_the_status_topic_names_its_device() -> None:
    assert parse_topic("lifebox/v1/SN-1/status") == ParsedTopic(TopicKind.STATUS, "SN-1")
    assert not isinstance(parse_topic("lifebox/v1/SN-1/status/x"), ParsedTopic)
