"""The `lifebox` command line: help that is true, config that hides secrets."""

from __future__ import annotations

import json
import subprocess
import sys

from lifebox_grpc.cli import COMMANDS


def lifebox(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lifebox_grpc.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )


def test_help_lists_every_declared_command() -> None:
    result = lifebox("--help")
    assert result.returncode == 0
    for command in COMMANDS:
        assert command.name in result.stdout
    for expected in ("dev", "serve", "ingest", "migrate", "seed", "config"):
        assert expected in {c.name for c in COMMANDS}


def test_every_subcommand_has_its_own_help() -> None:
    for command in COMMANDS:
        result = lifebox(command.name, "--help")
        assert result.returncode == 0, result.stderr
        assert f"lifebox {command.name}" in result.stdout


def test_config_masks_secrets(tmp_path: object) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "LIFEBOX_JWT_SIGNING_KEY": "super-secret-signing-key-that-must-not-leak",
        "LIFEBOX_DATABASE_URL": "postgresql://app:hunter2@db/lifebox",
    }
    result = lifebox("config", "--json", env=env)
    assert result.returncode == 0, result.stderr
    values = json.loads(result.stdout)
    assert values["jwt_signing_key"] == "**********"
    assert values["database_url"] == "**********"
    assert "hunter2" not in result.stdout
    assert "super-secret" not in result.stdout


def test_prod_mode_refuses_missing_signing_key_and_default_passwords() -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "LIFEBOX_MODE": "prod",
        "LIFEBOX_DATABASE_URL": "postgresql://app:postgres@db/lifebox",
    }
    result = lifebox("config", env=env)
    assert result.returncode == 1
    assert "LIFEBOX_JWT_SIGNING_KEY is required" in result.stderr
    assert "LIFEBOX_DATABASE_URL uses a default password" in result.stderr
    served = lifebox("serve", env=env)
    assert served.returncode == 2
    assert "refusing to start" in served.stderr


def test_config_describe_documents_every_setting() -> None:
    result = lifebox("config", "--describe")
    assert result.returncode == 0
    lines = [line for line in result.stdout.splitlines() if line.startswith("LIFEBOX_")]
    from lifebox_grpc.config import Settings

    assert len(lines) == len(Settings.model_fields)
    assert all(len(line.split(None, 2)) == 3 for line in lines), "a setting lacks a description"
