"""Realistic telemetry readings: all 37 known fields (~900 bytes of JSON), some with extras.

One generator for the load generator, the benchmarks and the tests, so they all measure the
same shape of data.
"""

from __future__ import annotations

import json
import random
from typing import Any

EXTRA_SHARE = 0.10


def reading(rng: random.Random, seq: int, ts_ms: int, with_extra: bool = False) -> dict[str, Any]:
    """One reading of a three-phase meter with environment sensors and a radio."""
    volts = [rng.gauss(230.0, 2.0) for _ in range(3)]
    amps = [abs(rng.gauss(12.0, 3.0)) for _ in range(3)]
    power = sum(v * a for v, a in zip(volts, amps, strict=True))
    body: dict[str, Any] = {
        "ts": ts_ms,
        "voltage_l1": round(volts[0], 3),
        "voltage_l2": round(volts[1], 3),
        "voltage_l3": round(volts[2], 3),
        "current_l1": round(amps[0], 4),
        "current_l2": round(amps[1], 4),
        "current_l3": round(amps[2], 4),
        "active_power_w": round(power * 0.95, 2),
        "reactive_power_var": round(power * 0.31, 2),
        "apparent_power_va": round(power, 2),
        "power_factor": round(rng.uniform(0.85, 0.99), 4),
        "frequency_hz": round(rng.gauss(50.0, 0.02), 4),
        "energy_import_kwh": round(1000 + seq * 0.0123, 4),
        "energy_export_kwh": round(seq * 0.0011, 4),
        "temperature_c": round(rng.gauss(24.0, 3.0), 2),
        "humidity_pct": round(rng.uniform(20, 80), 2),
        "pressure_hpa": round(rng.gauss(1013.0, 4.0), 2),
        "battery_v": round(rng.uniform(3.4, 4.2), 3),
        "battery_pct": round(rng.uniform(10, 100), 1),
        "rssi_dbm": round(rng.uniform(-110, -50), 1),
        "snr_db": round(rng.uniform(-5, 12), 1),
        "latitude": round(30.0444 + rng.uniform(-0.1, 0.1), 6),
        "longitude": round(31.2357 + rng.uniform(-0.1, 0.1), 6),
        "altitude_m": round(rng.uniform(10, 80), 1),
        "co2_ppm": round(rng.uniform(400, 1200), 1),
        "pm25_ugm3": round(rng.uniform(5, 60), 1),
        "uptime_s": 86_400 + seq,
        "packet_seq": seq,
        "tx_bytes": 1_000_000 + seq * 900,
        "rx_bytes": 20_000 + seq * 40,
        "error_count": rng.randint(0, 3),
        "reboot_count": rng.randint(0, 5),
        "relay_on": rng.random() < 0.5,
        "door_open": rng.random() < 0.1,
        "tamper_alarm": False,
        "low_battery": rng.random() < 0.05,
        "firmware_version": "2.4.17-lifebox-meter-build.20261101+sha.9f3c2e1a",
        "status": "ok: all phases nominal, relay cycle normal, radio link stable",
    }
    if with_extra:
        body["board"] = {"rev": "C", "sensors": ["sht31", "bmp280"], "slot": rng.randint(1, 8)}
        body["note"] = "calibrated"
    return body


def corpus(count: int, seed: int = 1, base_ts_ms: int = 1_764_000_000_000) -> list[bytes]:
    """`count` encoded readings, 10 % with unknown fields, one millisecond apart."""
    rng = random.Random(seed)
    return [
        json.dumps(
            reading(rng, i, base_ts_ms + i, with_extra=rng.random() < EXTRA_SHARE),
            separators=(",", ":"),
        ).encode()
        for i in range(count)
    ]
