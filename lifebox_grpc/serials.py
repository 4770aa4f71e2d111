"""The device serial grammar, once: the CHECKs on ``devices.serial`` (migrations/0003, 0045)
in Python.

A serial is one MQTT topic level (``lifebox/v1/{serial}/…``): 1 to 64 ASCII letters, digits,
``_``, ``.``, ``:`` or ``-``, starting with a letter or digit. It is also the device's broker
username, so it never starts with ``lifebox-`` in any letter case: that prefix names the
broker's service accounts (``lifebox-ingest``, ``lifebox-serve``, ``lifebox-health``,
``lifebox-broker-admin`` and any added later), and a device named like one would log in with
its rights.
"""

from __future__ import annotations

import re

MAX_SERIAL = 64
RESERVED_PREFIX = "lifebox-"
# fullmatch, not '^…$': Python's '$' also matches before a final newline, PostgreSQL's does not.
_SERIAL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")


def is_reserved_serial(value: str) -> bool:
    """True when ``value`` names a broker service account (the ``lifebox-`` prefix, any case)."""
    return value[: len(RESERVED_PREFIX)].lower() == RESERVED_PREFIX


def is_valid_serial(value: str) -> bool:
    """True when `value` is a serial the devices table accepts. Constant time on hostile
    input: anything longer than a serial is refused before the pattern runs."""
    return (
        len(value) <= MAX_SERIAL
        and _SERIAL.fullmatch(value) is not None
        and not is_reserved_serial(value)
    )
