"""docker-compose.yml and the Dockerfile hang together (Docker itself can't run here)."""

from __future__ import annotations

import itertools
import re
import tomllib
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def test_compose_has_the_platform_services_with_healthchecks() -> None:
    services = _compose()["services"]
    for name in ("timescaledb", "mosquitto", "migrate", "serve", "ingest"):
        assert name in services, name
    for name in ("timescaledb", "mosquitto", "serve", "ingest"):
        assert "healthcheck" in services[name], f"{name} has no healthcheck"
    assert services["ingest"]["deploy"]["replicas"] == 2


def test_images_are_pinned_and_timescaledb_matches_postgres_15() -> None:
    for name, service in _compose()["services"].items():
        image = service.get("image", "")
        if "build" in service or image.startswith("lifebox:"):
            continue
        assert ":" in image, f"{name}: unpinned {image}"
        assert not image.endswith(":latest"), f"{name}: unpinned {image}"
    # 2.28 is TimescaleDB's last line for PostgreSQL 15; the suite's hypertable path was
    # run on a 2.28.3 built from source.
    assert re.fullmatch(
        r"timescale/timescaledb:2\.28\.\d+-pg15", _compose()["services"]["timescaledb"]["image"]
    )


def test_dependencies_volumes_and_mounted_files_exist() -> None:
    compose = _compose()
    services = compose["services"]
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
            elif not source.startswith("$"):
                assert source in compose["volumes"], f"{name} uses undeclared volume {source}"


def test_published_ports_match_the_settings_each_service_gets() -> None:
    services = _compose()["services"]
    serve = services["serve"]
    published = {p.split(":")[1] for p in serve["ports"]}
    assert serve["environment"]["LIFEBOX_GRPC_PORT"] in published
    assert serve["environment"]["LIFEBOX_HTTP_PORT"] in published
    assert serve["environment"]["LIFEBOX_HTTP_PORT"] in str(serve["healthcheck"]["test"])
    ingest = services["ingest"]
    assert ingest["environment"]["LIFEBOX_INGEST_METRICS_PORT"] in str(
        ingest["healthcheck"]["test"]
    )


def test_production_broker_has_persistence_and_no_anonymous_access() -> None:
    conf = (ROOT / "deploy/mosquitto/mosquitto.conf").read_text()
    assert re.search(r"^allow_anonymous false$", conf, re.M)
    assert re.search(r"^persistence true$", conf, re.M)
    assert re.search(r"^max_queued_messages \d+$", conf, re.M)
    assert "dev" in _compose()["services"]["mosquitto-dev"]["profiles"]
    assert "profiles" not in _compose()["services"]["mosquitto"]


def test_dockerfile_is_multistage_and_runs_as_non_root() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", dockerfile, re.M)) >= 2
    assert "maturin build" in dockerfile
    users = re.findall(r"^USER (\S+)", dockerfile, re.M)
    assert users
    assert users[-1] not in ("root", "0")
    for copied in re.findall(r"^COPY (?!--from)(\S+)", dockerfile, re.M):
        assert (ROOT / copied).exists(), f"Dockerfile copies missing {copied}"


def test_the_build_stage_has_every_cargo_workspace_member() -> None:
    """cargo refuses to load a workspace whose member folder is missing."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (?!--from)(\S+) ", dockerfile, re.M))
    workspace = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]
    assert set(workspace["members"]) <= copied


def _image_argv() -> tuple[list[str], list[str]]:
    """ENTRYPOINT and CMD of our Dockerfile's final stage."""
    text = (ROOT / "Dockerfile").read_text()
    final = text.rsplit("\nFROM ", 1)[1]
    entry = re.search(r"^ENTRYPOINT (\[.*\])$", final, re.M)
    cmd = re.search(r"^CMD (\[.*\])$", final, re.M)
    assert entry
    assert cmd
    return yaml.safe_load(entry.group(1)), yaml.safe_load(cmd.group(1))


def _lifebox_runs(service: dict[str, Any]) -> list[list[str]]:
    """Each `lifebox …` argv a service of our image runs, as Docker would build it
    (entrypoint + command, a service's own replacing the image's)."""
    entrypoint, cmd = _image_argv()
    argv = list(service.get("entrypoint", entrypoint)) + list(service.get("command", cmd))
    if argv[:2] == ["/bin/sh", "-c"]:
        return [part.split() for part in " ".join(argv[2:]).split("&&")]
    return [argv]


def _lifebox_command(service: dict[str, Any]) -> str | None:
    """The `lifebox` subcommand a service of our image runs (its first, for a chain)."""
    if service.get("image") != "lifebox:local":
        return None
    return _lifebox_runs(service)[0][1]


def test_every_compose_service_runs_a_real_lifebox_command() -> None:
    import subprocess
    import sys

    ran = []
    for name, service in _compose()["services"].items():
        if service.get("image") != "lifebox:local":
            continue
        for argv in _lifebox_runs(service):
            assert argv[0] == "lifebox", f"{name} runs {argv}"
            result = subprocess.run(
                [sys.executable, "-m", "lifebox_grpc.cli", *argv[1:], "--help"],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert result.returncode == 0, f"{name}: {argv}: {result.stderr}"
            ran.append(argv[1])
    assert sorted(ran) == [
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


def test_every_lifebox_variable_compose_sets_is_a_setting() -> None:
    from lifebox_grpc.config import Settings

    known = {f"LIFEBOX_{name.upper()}" for name in Settings.model_fields}
    for name, service in _compose()["services"].items():
        if service.get("image") != "lifebox:local":
            continue  # the database's init script reads LIFEBOX_*_PASSWORD of its own
        env = service.get("environment", {})
        unknown = {key for key in env if key.startswith("LIFEBOX_")} - known
        assert not unknown, f"{name} sets unknown settings {unknown}"


def test_each_compose_service_holds_only_its_own_credentials() -> None:
    from lifebox_grpc.config import CREDENTIALS, PROCESS_CREDENTIALS

    checked = []
    for name, service in _compose()["services"].items():
        command = _lifebox_command(service)
        if command is None:
            continue
        env = service.get("environment", {})
        held = {key for key in CREDENTIALS if f"LIFEBOX_{key.upper()}" in env}
        assert held == set(PROCESS_CREDENTIALS[command]), f"{name} ({command}) holds {held}"
        signs_tokens = "LIFEBOX_JWT_SIGNING_KEY" in env
        assert signs_tokens == (command == "serve"), f"{name}: signing key"
        checked.append(command)
    assert sorted(checked) == [
        "broker-sync",
        "dispatch",
        "ingest",
        "maintain",
        "migrate",
        "pki",
        "reactions",
        "serve",
    ]


def test_the_broker_healthcheck_account_reads_only_the_topic_it_checks() -> None:
    acl = (ROOT / "deploy/mosquitto/acl").read_text()
    rules = acl.split("user lifebox-health", 1)[1].split("\nuser ", 1)[0]
    topics = [line.split()[1:] for line in rules.splitlines() if line.startswith("topic")]
    assert topics == [["read", "$SYS/broker/uptime"]]
    test = " ".join(_compose()["services"]["mosquitto"]["healthcheck"]["test"])
    assert "$$SYS/broker/uptime" in test
    assert "mosquitto/auth/health" in test
    assert "lifebox-health" in (ROOT / "deploy/mosquitto/make-passwd.sh").read_text()


# --- broker reconciler (issue 13) ---
def _conf_value(conf: str, key: str) -> str:
    found = re.search(rf"^{key} (\S+)$", conf, re.M)
    assert found, key
    return found.group(1)


def _listener(conf: str, port: str) -> str:
    """The lines of one listener block of a mosquitto.conf with per_listener_settings."""
    block = conf.split(f"\nlistener {port}\n", 1)[1]
    return block.split("\nlistener ", 1)[0]


def test_devices_reach_the_compose_broker_over_tls_only() -> None:
    conf = (ROOT / "deploy/mosquitto/mosquitto.conf").read_text()
    assert re.search(r"^per_listener_settings true$", conf, re.M)
    plain, tls_password, mutual = (_listener(conf, p) for p in ("1883", "8883", "8884"))
    # The plain listener knows the services' accounts only (make-passwd.sh), never a device.
    assert _conf_value(plain, "password_file") == "/mosquitto/auth/service.passwd"
    assert "certfile" not in plain
    for block in (tls_password, mutual):
        assert _conf_value(block, "certfile") == "/pki/broker.crt"
        assert _conf_value(block, "cafile") == "/pki/ca.crt"
    assert _conf_value(tls_password, "password_file") == "/mosquitto/auth/passwd"
    assert _conf_value(mutual, "require_certificate") == "true"
    assert _conf_value(mutual, "use_identity_as_username") == "true"
    services = _compose()["services"]
    assert sorted(services["mosquitto"]["ports"]) == ["8883:8883", "8884:8884"]
    env = services["broker-sync"]["environment"]
    assert env["LIFEBOX_BROKER_CRL_FILE"] == _conf_value(mutual, "crlfile")
    assert env["LIFEBOX_BROKER_CERTIFICATE_ACL_FILE"] == _conf_value(mutual, "acl_file")
    for name in ("broker-sync", "serve"):
        assert services[name]["environment"]["LIFEBOX_DEVICE_CA_KEY_FILE"] == "/pki/ca.key"
        assert "pki:/pki:ro" in services[name]["volumes"], name


def test_broker_sync_sidecar_shares_the_brokers_pid_namespace_files_and_uid() -> None:
    services = _compose()["services"]
    sidecar, broker = services["broker-sync"], services["mosquitto"]
    assert _lifebox_command(sidecar) == "broker-sync"
    assert sidecar["pid"] == "service:mosquitto"
    assert sidecar["user"].split(":")[0] == "1883", "mosquitto's uid in eclipse-mosquitto"
    env = sidecar["environment"]
    whole = (ROOT / "deploy/mosquitto/mosquitto.conf").read_text()
    conf = _listener(whole, "8883") + "\n" + whole  # its listener first, then global keys
    mounts = {v.split(":")[1]: v for v in broker["volumes"]}
    sidecar_mounts = {v.split(":")[1]: v for v in sidecar["volumes"]}
    for setting, key in (
        ("LIFEBOX_BROKER_PASSWORD_FILE", "password_file"),
        ("LIFEBOX_BROKER_ACL_FILE", "acl_file"),
        ("LIFEBOX_BROKER_PID_FILE", "pid_file"),
    ):
        path = _conf_value(conf, key)
        assert env[setting] == path, setting
        folder = str(Path(path).parent)
        assert folder in mounts, f"the broker does not mount {folder}"
        assert folder in sidecar_mounts, f"broker-sync does not mount {folder}"
        assert mounts[folder].split(":")[0] == sidecar_mounts[folder].split(":")[0]
    assert not sidecar_mounts["/mosquitto/auth"].endswith(":ro"), "broker-sync writes them"
    assert env["LIFEBOX_BROKER_SERVICE_PASSWORDS_FILE"].startswith("/mosquitto/auth/")
    assert env["LIFEBOX_BROKER_SYNC_METRICS_PORT"] in str(sidecar["healthcheck"]["test"])


def test_no_compose_broker_allows_anonymous_access() -> None:
    for name in ("mosquitto.conf", "mosquitto-dev.conf"):
        conf = (ROOT / "deploy/mosquitto" / name).read_text()
        assert re.search(r"^allow_anonymous false$", conf, re.M), name
        assert "allow_anonymous true" not in conf, name
        blocks = conf.split("\nlistener ")[1:]
        assert blocks, name
        for block in blocks:  # per listener
            assert re.search(r"^allow_anonymous false$", block, re.M), (name, block[:5])
    dev = _compose()["services"]["mosquitto-dev"]
    assert any(v.startswith("mqttauth:") for v in dev["volumes"])
    assert "mosquitto/auth/health" in " ".join(dev["healthcheck"]["test"])


def test_the_shipped_acl_is_the_one_broker_sync_renders() -> None:
    from lifebox_grpc.broker import files

    assert (ROOT / "deploy/mosquitto/acl").read_text() == files.acl_file()


# --- commands (issue 14) ---
def test_the_dispatcher_runs_with_its_own_role_and_account_once_the_schema_and_broker_are_up() -> (
    None
):
    services = _compose()["services"]
    dispatch = services["dispatch"]
    assert _lifebox_command(dispatch) == "dispatch"
    env = dispatch["environment"]
    assert env["LIFEBOX_MODE"] == "prod"
    assert env["LIFEBOX_DISPATCH_DATABASE_URL"].startswith(
        "postgresql://lifebox_dispatch:${LIFEBOX_DISPATCH_PASSWORD:?"
    )
    assert env["LIFEBOX_DISPATCH_MQTT_URL"].startswith(
        "mqtt://lifebox-dispatch:${MQTT_DISPATCH_PASSWORD:?"
    )
    assert env["LIFEBOX_DISPATCH_MQTT_URL"].endswith("@mosquitto:1883")
    assert dispatch["depends_on"] == {
        "migrate": {"condition": "service_completed_successfully"},
        "mosquitto": {"condition": "service_healthy"},
    }
    assert env["LIFEBOX_DISPATCH_METRICS_PORT"] == "9110"
    assert "127.0.0.1:9110/metrics" in str(dispatch["healthcheck"]["test"])
    assert "ports" not in dispatch, "the dispatcher serves nothing outside the compose network"
    # Its secrets reach the two one-shots that make the role and the account, and .env.example.
    database = services["timescaledb"]["environment"]
    assert database["LIFEBOX_DISPATCH_PASSWORD"] == "${LIFEBOX_DISPATCH_PASSWORD:?set in .env}"
    passwd = services["mosquitto-passwd"]["environment"]
    assert passwd["MQTT_DISPATCH_PASSWORD"] == "${MQTT_DISPATCH_PASSWORD:?set in .env}"
    example = (ROOT / ".env.example").read_text().splitlines()
    assert "LIFEBOX_DISPATCH_PASSWORD=" in example
    assert "MQTT_DISPATCH_PASSWORD=" in example
    make = (ROOT / "deploy/mosquitto/make-passwd.sh").read_text()
    assert "lifebox-dispatch:%s" in make
    assert "$MQTT_DISPATCH_PASSWORD" in make


def test_only_the_dispatcher_may_publish_commands_and_serve_has_no_topic_rights() -> None:
    from lifebox_grpc.broker import files

    acl = (ROOT / "deploy/mosquitto/acl").read_text()

    def rules(account: str) -> list[str]:
        """The topic lines right under ``user account`` (up to the next non-topic line)."""
        lines = acl.split(f"\nuser {account}\n", 1)[1].splitlines()
        return list(itertools.takewhile(lambda line: line.startswith("topic "), lines))

    assert rules(files.DISPATCH) == ["topic write lifebox/v1/+/commands/+"]
    assert rules(files.SERVE) == []
    writers = [a for a, r in files.SERVICE_RULES.items() if any("commands" in x for x in r)]
    assert writers == [files.INGEST, files.DISPATCH]  # ingest reads acks, dispatch writes
