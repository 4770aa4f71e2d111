"""The load generator: readings rendered here, published by the `lifebox-loadgen` binary.

The readings come from the project's one generator (`readings.py`); the Rust binary
(`loadgen/` in the Cargo workspace, built by `make setup`) stamps each reading's ``ts`` at
publish time, publishes K readings per message over several connections with QoS 1, and
costs a few percent of a core where a Python publisher costs a whole one (measured: one
paho-mqtt process peaked near 6,000 messages/s on a full core). On a 2-core machine that
CPU would otherwise be taken from the broker, ingest and PostgreSQL being measured.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from lifebox_grpc.loadgen.readings import EXTRA_SHARE, reading

BINARY = "lifebox-loadgen"
BODIES = 64  # distinct readings cycled through


class LoadgenError(RuntimeError):
    """The load generator binary is missing or failed."""


@dataclass(frozen=True)
class LoadPlan:
    mqtt_url: str
    serials: list[str]
    per_message: int = 1
    rate: float = 0.0  # readings per second per device; 0 = as fast as possible
    duration_s: float | None = 10.0
    messages: int | None = None  # total messages; stops at whichever limit comes first
    connections: int = 4  # shared connections (ignored with credentials)
    qos: int = 1
    # serial -> password: one connection per device, logged in as itself (as a real fleet
    # does); None: `connections` shared connections as the URL's account.
    credentials: dict[str, str] | None = None


@dataclass(frozen=True)
class LoadReport:
    messages: int  # acknowledged by the broker (QoS 1) or sent (QoS 0)
    readings: int  # in the acknowledged messages
    seconds: float
    sent: int  # messages published (acknowledged or not)

    @property
    def messages_per_s(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0

    @property
    def readings_per_s(self) -> float:
        return self.readings / self.seconds if self.seconds else 0.0


def binary_path() -> Path:
    """Where the binary is: $LIFEBOX_LOADGEN_BIN, the PATH, or this checkout's cargo target."""
    candidates = [
        os.environ.get("LIFEBOX_LOADGEN_BIN"),
        shutil.which(BINARY),
        str(Path(__file__).resolve().parents[2] / "target" / "release" / BINARY),
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise LoadgenError(
        f"{BINARY} not found: build it with `cargo build --release -p {BINARY}` "
        "(make setup does) or set LIFEBOX_LOADGEN_BIN"
    )


def render_bodies(count: int = BODIES, seed: int = 1) -> list[str]:
    """Readings as JSON without ``ts`` and without the opening brace: the binary adds both."""
    rng = random.Random(seed)
    out = []
    for seq in range(count):
        body = reading(rng, seq, 0, with_extra=rng.random() < EXTRA_SHARE)
        del body["ts"]
        out.append(json.dumps(body, separators=(",", ":"))[1:])
    return out


def _argv(
    plan: LoadPlan, serials_file: Path, bodies_file: Path, credentials_file: Path | None = None
) -> list[str]:
    url = urlsplit(plan.mqtt_url)
    argv = [
        str(binary_path()),
        "--host", url.hostname or "127.0.0.1",
        "--port", str(url.port or 1883),
        "--serials-file", str(serials_file),
        "--bodies-file", str(bodies_file),
        "--per-message", str(plan.per_message),
        "--rate", str(plan.rate),
        "--qos", str(plan.qos),
        "--connections", str(plan.connections),
    ]  # fmt: skip
    if plan.duration_s is not None:
        argv += ["--duration", str(plan.duration_s)]
    if plan.messages is not None:
        argv += ["--messages", str(plan.messages)]
    if credentials_file is not None:
        argv += ["--credentials-file", str(credentials_file)]  # passwords never on argv
    elif url.username:
        argv += ["--username", url.username]  # the password goes by environment, not argv
    return argv


def run_loadgen(plan: LoadPlan, progress: Callable[[str], None] | None = None) -> LoadReport:
    """Publish per the plan; return what the broker acknowledged and how long it took."""
    if plan.duration_s is None and plan.messages is None:
        raise LoadgenError("give a duration or a message count")
    with tempfile.TemporaryDirectory(prefix="lifebox-loadgen-") as tmp:
        serials_file = Path(tmp) / "serials"
        bodies_file = Path(tmp) / "bodies"
        serials_file.write_text("\n".join(plan.serials) + "\n")
        bodies_file.write_text("\n".join(render_bodies()) + "\n")
        credentials_file = None
        if plan.credentials is not None:
            credentials_file = Path(tmp) / "credentials"  # the folder is 0700 (mkdtemp)
            fd = os.open(credentials_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.writelines(f"{serial} {plan.credentials[serial]}\n" for serial in plan.serials)
        password = urlsplit(plan.mqtt_url).password
        env = {**os.environ, "LIFEBOX_LOADGEN_PASSWORD": password} if password else None
        proc = subprocess.Popen(
            _argv(plan, serials_file, bodies_file, credentials_file),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stderr is not None
        assert proc.stdout is not None
        errors = []
        for line in proc.stderr:
            if line.startswith("progress "):
                _, secs, _sent, acked, rate = line.split()
                if progress:
                    progress(
                        f"\r{float(secs):6.1f}s  {int(acked):>10,} messages acked  "
                        f"{float(rate):>10,.0f} readings/s"
                    )
            else:
                errors.append(line.rstrip())
        summary = proc.stdout.read()
        proc.wait()
    if progress:
        progress("\n")
    if proc.returncode != 0 or not summary.strip():
        raise LoadgenError("; ".join(errors) or f"{BINARY} exited with {proc.returncode}")
    result = json.loads(summary.strip().splitlines()[-1])
    return LoadReport(
        int(result["messages"]),
        int(result["readings"]),
        float(result["seconds"]),
        int(result["sent"]),
    )


def print_progress(line: str) -> None:
    import sys

    sys.stderr.write(line)
    sys.stderr.flush()
