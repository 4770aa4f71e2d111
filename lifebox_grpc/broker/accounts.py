"""Service accounts of the broker: their hashes as a static file, and (embedded broker only)
generated passwords kept under the run directory.

In a deployment `deploy/mosquitto/make-passwd.sh` hashes the service passwords into a
``user:$7$…`` file once; the reconciler merges those lines with the devices' entries, so it
never holds a service account's plaintext. The embedded broker (dev, tests, benchmarks)
generates a password per account into ``accounts.json`` (0600) beside its config and writes
the same kind of hash file.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from lifebox_grpc.broker import passwords
from lifebox_grpc.broker.files import write_private

ACCOUNTS_FILE = "accounts.json"
SERVICE_PASSWORDS_FILE = "service.passwd"


class ServiceAccountsError(ValueError):
    """The service accounts' hash file has a line that is not ``user:$7$…``."""


def read_service_entries(path: Path) -> list[tuple[str, str]]:
    """(username, ``$7$`` hash) of every line of a mosquitto password file; blank lines and
    ``#`` comments are skipped. A line of another form is refused: the reconciler would
    otherwise write a file the broker rejects, locking every account out."""
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        user, sep, encoded = line.partition(":")
        if not sep or not user or not encoded.startswith("$7$"):
            raise ServiceAccountsError(f"{path}:{number}: not a `user:$7$…` line")
        entries.append((user, encoded))
    return entries


def ensure_service_accounts(directory: Path, names: Iterable[str]) -> dict[str, str]:
    """Each account's password (made once, kept in ``accounts.json``, 0600) and
    ``service.passwd`` of their hashes (rewritten when the accounts change). Returns
    name -> password."""
    store = directory / ACCOUNTS_FILE
    known: dict[str, str] = json.loads(store.read_text()) if store.exists() else {}
    wanted = list(names)
    accounts = {name: known.get(name) or passwords.new_secret() for name in wanted}
    hashes = directory / SERVICE_PASSWORDS_FILE
    if accounts != known or not hashes.exists():  # unchanged accounts keep their hashes
        write_private(store, (json.dumps(accounts, indent=2) + "\n").encode())
        write_private(
            hashes,
            "".join(
                f"{name}:{passwords.hash_secret(secret).encoded}\n"
                for name, secret in accounts.items()
            ).encode(),
        )
    return accounts


def load_accounts(directory: Path) -> dict[str, str]:
    """The embedded broker's account passwords (empty when none were made)."""
    try:
        loaded: dict[str, str] = json.loads((directory / ACCOUNTS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return loaded
