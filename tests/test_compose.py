"""docker-compose.yml proved without Docker (which cannot run here): for every service of our
image, the argv Docker would run (the Dockerfile's ENTRYPOINT/CMD and the service's
entrypoint/command) is run against the installed `lifebox`, its environment is a valid prod
configuration for that process, every LIFEBOX_* variable is a real setting, every ${…} is in
.env.example, and each healthcheck asks something its process serves with a program its
image has. The broker's healthcheck runs for real in test_deploy_mosquitto.py, and serve's
and ingest's in test_deploy_postgres.py (against processes started from compose's
environment)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lifebox_grpc.config import CREDENTIALS, PROCESS_CREDENTIALS, Settings
from tests.helpers.compose import (
    ROOT,
    dotenv,
    effective_argv,
    image,
    interpolate,
    lifebox_invocations,
    lifebox_services,
    service_environment,
    services,
    stages,
)

LIFEBOX = Path(sys.executable).parent / "lifebox"  # the console script pip installed
KNOWN = {f"LIFEBOX_{name.upper()}" for name in Settings.model_fields}
# Read from the environment outside Settings (where the image keeps the SQL files); each
# entry names the module that reads it, and the test checks that it still does.
OUTSIDE_SETTINGS = {"LIFEBOX_MIGRATIONS_DIR": "lifebox_grpc/store/migrations.py"}


def _runs() -> list[tuple[str, list[str]]]:
    env = dotenv()
    return [
        (name, invocation)
        for name, service in lifebox_services().items()
        for invocation in lifebox_invocations(effective_argv(service, env))
    ]


def test_every_service_of_our_image_runs_lifebox_commands_only() -> None:
    runs = _runs()
    assert sorted({argv[1] for _, argv in runs}) == sorted(
        [
            "broker-sync",
            "dispatch",
            "ingest",
            "maintain",
            "migrate",
            "pki",
            "reactions",
            "seed",
            "serve",
        ]
    )
    # The one-shot that migrates also seeds, in that order, and stops at the first failure.
    assert [argv[1:] for name, argv in runs if name == "migrate"] == [["migrate"], ["seed"]]


@pytest.mark.parametrize(("service", "argv"), _runs(), ids=lambda v: str(v))
def test_each_effective_argv_is_accepted_by_the_installed_lifebox(
    service: str, argv: list[str]
) -> None:
    """The exact argv (options included) parses: `--help` after it exits 0 only when every
    option before it is one the subcommand has."""
    assert LIFEBOX.exists(), f"{LIFEBOX}: pip install -e . makes it"
    env = {"PATH": os.environ["PATH"]}
    result = subprocess.run(
        [str(LIFEBOX), *argv[1:], "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert result.returncode == 0, f"{service}: {argv}: {result.stderr}"
    assert f"usage: lifebox {argv[1]}" in result.stdout


def test_a_service_overriding_the_entrypoint_does_not_inherit_the_images_cmd() -> None:
    """Docker drops the image's CMD when a service sets an entrypoint; a shell entrypoint
    with no command would run `sh -c` with nothing."""
    built = image()
    assert built.entrypoint == ["lifebox"]
    for name, service in lifebox_services().items():
        if "entrypoint" in service:
            assert service.get("command"), f"{name} sets an entrypoint and no command"
        argv = effective_argv(service, dotenv())
        assert argv[0] in ("lifebox", "/bin/sh"), f"{name}: {argv}"


def test_every_lifebox_variable_is_a_real_setting() -> None:
    """Compose's and the Dockerfile's; a misspelt one would be silently ignored."""
    unknown = {k for k in image().env if k.startswith("LIFEBOX_")} - KNOWN - set(OUTSIDE_SETTINGS)
    assert not unknown, f"Dockerfile sets unknown settings {unknown}"
    for variable, reader in OUTSIDE_SETTINGS.items():
        assert f'"{variable}"' in (ROOT / reader).read_text(), f"{reader} no longer reads it"
    copied = [rest.split() for kw, rest in stages()[-1] if kw == "COPY" and "--from" not in rest]
    assert ["migrations", image().env["LIFEBOX_MIGRATIONS_DIR"]] in copied
    for name, service in lifebox_services().items():
        env = service.get("environment", {})
        unknown = {k for k in env if k.startswith("LIFEBOX_")} - KNOWN
        assert not unknown, f"{name} sets unknown settings {unknown}"


def test_every_variable_compose_reads_is_in_env_example() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    required = set(re.findall(r"\$\{(\w+):?\?", body))
    defaulted = set(re.findall(r"\$\{(\w+):?-", body))
    example = set(dotenv())
    assert required - example == set(), "required but not in .env.example"
    assert required, "compose reads its secrets from .env"
    # Every required variable really is required (compose fails without it).
    for variable in required:
        partial = {k: v for k, v in dotenv().items() if k != variable}
        with pytest.raises(KeyError):
            _interpolate_everything(partial)
    assert defaulted <= example | {
        "LIFEBOX_TLS_CERT_FILE",
        "LIFEBOX_TLS_KEY_FILE",
        "LIFEBOX_CERTS_DIR",
    }


def _interpolate_everything(env: dict[str, str]) -> None:
    for service in services().values():
        for value in service.get("environment", {}).values():
            interpolate(str(value), env)
        for part in service.get("command", []):
            interpolate(str(part), env)


def _settings(env: dict[str, str]) -> Settings:
    saved = dict(os.environ)
    try:
        for key in [k for k in os.environ if k.startswith("LIFEBOX_")]:
            del os.environ[key]
        os.environ.update(env)
        return Settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.mark.parametrize(("service", "argv"), _runs(), ids=lambda v: str(v))
def test_each_service_environment_is_a_safe_prod_configuration_for_its_process(
    service: str, argv: list[str]
) -> None:
    """What `lifebox <process>` checks at start in prod mode (least privilege, signing key,
    TLS on a public address, no default password) passes with compose's environment under
    the image's."""
    env = service_environment(lifebox_services()[service], dotenv())
    settings = _settings(env)
    assert settings.mode.value == "prod"
    assert settings.production_problems(argv[1]) == [], service
    held = {name for name in CREDENTIALS if getattr(settings, name) is not None}
    assert held == set(PROCESS_CREDENTIALS[argv[1]])


def _health_argv(service: dict[str, Any]) -> list[str]:
    test = service["healthcheck"]["test"]
    assert test[0] in ("CMD", "CMD-SHELL"), test
    return [str(part) for part in test]


def _port_of(text: str) -> int:
    found = re.search(r"127\.0\.0\.1:(\d+)/", text)
    assert found, text
    return int(found.group(1))


@pytest.mark.parametrize(
    ("service", "setting"),
    [
        ("serve", "http_port"),
        ("ingest", "ingest_metrics_port"),
        ("broker-sync", "broker_sync_metrics_port"),
        ("dispatch", "dispatch_metrics_port"),
        ("reactions", "reactions_metrics_port"),
    ],
)
def test_each_healthcheck_asks_its_own_process_on_its_port_with_the_images_python(
    service: str, setting: str
) -> None:
    spec = lifebox_services()[service]
    argv = _health_argv(spec)
    assert argv[:3] == ["CMD", "python", "-c"], "the image has python (and no curl)"
    assert image().base.startswith("python:3."), image().base
    settings = _settings(service_environment(spec, dotenv()))
    assert _port_of(argv[3]) == getattr(settings, setting)
    assert getattr(settings, setting) in image().exposed
    # A metric the check looks for must be one the process exports.
    wanted = re.findall(r"b'(lifebox_\w+)", argv[3])
    if wanted:
        from prometheus_client import REGISTRY

        import lifebox_grpc.alarms.reactions.worker
        import lifebox_grpc.broker.sync
        import lifebox_grpc.commands.dispatcher
        import lifebox_grpc.metrics  # noqa: F401

        names = {sample.name for metric in REGISTRY.collect() for sample in metric.samples}
        for metric in wanted:
            assert metric in names, f"{service} checks {metric}, which nothing exports"


def test_every_long_running_service_has_a_healthcheck_and_dependents_wait_for_it() -> None:
    all_services = services()
    one_shots = {n for n, s in all_services.items() if s.get("restart") in (None, "no")}
    # `lifebox maintain` listens on nothing (a pass per interval); nothing waits for it, and
    # `restart: unless-stopped` brings it back when it exits.
    unprobed = {"maintenance"}
    for name, service in all_services.items():
        if name not in one_shots | unprobed and "profiles" not in service:
            assert "healthcheck" in service, f"{name} runs for ever without a healthcheck"
        for dependency, rule in service.get("depends_on", {}).items():
            condition = rule["condition"]
            assert dependency not in unprobed, f"{name} waits for {dependency}"
            if condition == "service_healthy":
                assert "healthcheck" in all_services[dependency], (name, dependency)
            if condition == "service_completed_successfully":
                assert dependency in one_shots, f"{dependency} never completes"


def test_the_databases_healthcheck_names_the_database_the_init_script_makes() -> None:
    database = services()["timescaledb"]
    argv = _health_argv(database)
    assert argv[0] == "CMD-SHELL"
    assert argv[1].split()[0] == "pg_isready", "pg_isready needs no password or role rights"
    assert "-d lifebox" in argv[1]
    init = (ROOT / "deploy/postgres/init-lifebox.sh").read_text()
    assert "CREATE DATABASE lifebox OWNER lifebox_owner" in init
    mounted = [v for v in database["volumes"] if "init-lifebox.sh" in v]
    assert mounted == [
        "./deploy/postgres/init-lifebox.sh:/docker-entrypoint-initdb.d/10-lifebox.sh:ro"
    ]
    # The entrypoint sources a non-executable *.sh (its `set -e`, `exit` would be its own).
    assert os.access(ROOT / "deploy/postgres/init-lifebox.sh", os.X_OK)
