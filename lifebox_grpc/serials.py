"""The device serial grammar, once: the CHECK on ``devices.serial`` (migrations/0003) in Python.

A serial is one MQTT topic level (``lifebox/v1/{serial}/…``): 1 to 64 ASCII letters, digits,
``_``, ``.``, ``:`` or ``-``, starting with a letter or digit.
"""

from __future__ import annotations

import re

MAX_SERIAL = 64
# fullmatch, not '^…$': Python's '$' also matches before a final newline, PostgreSQL's does not.
_SERIAL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")


def is_valid_serial(value: str) -> bool:
    """True when `value` is a serial the devices table accepts. Constant time on hostile
    input: anything longer than a serial is refused before the pattern runs."""
    return len(value) <= MAX_SERIAL and _SERIAL.fullmatch(value) is not None
