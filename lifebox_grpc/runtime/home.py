"""The dev home directory (``.lifebox/``) and the secrets generated into it on first start."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

SECRETS_FILE = "secrets.json"
CREDENTIALS_FILE = "credentials"


@dataclass(frozen=True)
class DevSecrets:
    """Passwords and keys generated once per home and kept in ``secrets.json`` (mode 0600)."""

    pg_superuser_password: str
    pg_owner_password: str
    pg_app_password: str
    pg_ingest_password: str
    jwt_signing_key: str
    admin_password: str
    demo_password: str
    # --- broker reconciler (issue 13): added later, so a home made before it gets one then.
    pg_broker_sync_password: str = ""
    # --- commands (issue 14): `lifebox dispatch`'s role; a home from before it gets one then.
    pg_dispatch_password: str = ""
    # --- ops-db (issue 19): `lifebox db backup`'s read-only role; a home from before it.
    pg_backup_password: str = ""


def prepare_home(home: Path) -> Path:
    """Create the home directory: private to us, but traversable by the service users."""
    home = home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    # 0711: PostgreSQL and mosquitto run as their own users and must reach their subfolders,
    # while nobody else may list what is here.
    home.chmod(0o711)
    return home


def _token(nbytes: int = 24) -> str:
    return secrets.token_urlsafe(nbytes)


def load_or_create_secrets(home: Path) -> DevSecrets:
    """Return the home's secrets, generating and saving them on first use."""
    path = home / SECRETS_FILE
    if path.exists():
        loaded = DevSecrets(**json.loads(path.read_text()))
        # --- broker reconciler (issue 13), commands (issue 14): a home from before a role.
        missing = {
            name: _token()
            for name in ("pg_broker_sync_password", "pg_dispatch_password", "pg_backup_password")
            if not getattr(loaded, name)
        }
        if not missing:
            return loaded
        upgraded = DevSecrets(**{**asdict(loaded), **missing})
        write_private(path, json.dumps(asdict(upgraded), indent=2) + "\n")
        return upgraded
    generated = DevSecrets(
        pg_superuser_password=_token(),
        pg_owner_password=_token(),
        pg_app_password=_token(),
        pg_ingest_password=_token(),
        jwt_signing_key=_token(48),
        admin_password=_token(12),
        demo_password=_token(9),
        pg_broker_sync_password=_token(),
        pg_dispatch_password=_token(),  # --- commands (issue 14)
        pg_backup_password=_token(),  # --- ops-db (issue 19)
    )
    write_private(path, json.dumps(asdict(generated), indent=2) + "\n")
    return generated


def write_private(path: Path, text: str) -> None:
    """Write a file readable by its owner only, never briefly readable by others."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    path.chmod(0o600)
