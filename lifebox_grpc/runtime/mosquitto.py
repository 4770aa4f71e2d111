"""An embedded mosquitto broker with a generated configuration.

Loopback only, on its own port (never the machine's 1883), persistence on and saved every
second (``AUTOSAVE_INTERVAL_S``: a ``kill -9`` of the broker loses at most what it accepted in
the last second and had not delivered yet; benchmarks/broker_durability.py measured the
choices), and queue/in-flight limits set deliberately (mosquitto's defaults keep only
1000 messages per offline session and 20 in flight per client). A session's queue is bounded
in bytes (``max_queued_bytes``, the memory budget of ``LIFEBOX_MQTT_MAX_QUEUED_MB``), not by a
message count, and the broker publishes its counters (``$SYS``, among them the drops that
ingest reports: :mod:`lifebox_grpc.broker.drops`) every ``SYS_INTERVAL_S`` seconds. No
anonymous access: every client logs in. The service accounts get generated passwords kept
in ``accounts.json`` (0600) under the broker's folder; the password and ACL files are
rendered by the reconciler's own code (:mod:`lifebox_grpc.broker`), with no device yet: ``lifebox
broker-sync`` adds the devices' credentials from the database.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lifebox_grpc.broker import accounts as service_accounts
from lifebox_grpc.broker import files, tls
from lifebox_grpc.broker.files import certificate_acl_file
from lifebox_grpc.runtime.ports import free_port, port_is_free, private_log, wait_for_port

SERVICE_USER = "mosquitto"
PASSWORD_FILE = "passwd"  # noqa: S105 - a file name
ACL_FILE = "acl"
PID_FILE = "mosquitto.pid"
EXTRA_ACL_FILE = "extra.acl"
CERTIFICATE_ACL_FILE = "acl-certs"
CRL_FILE = "crl.pem"
# The accounts the platform's own processes use (README: who holds what).
DEFAULT_ACCOUNTS = (
    files.INGEST,
    files.SERVE,
    files.HEALTH,
    files.BROKER_ADMIN,
    files.DISPATCH,  # --- commands (issue 14)
)
# Seconds between saves of the broker's store. Measured (benchmarks/broker_durability.py):
# saving by time every second kept all but the last second's messages through kill -9 at
# full publishing speed, also with 300,000 queued; every 30 s kept none of a 100,000 queue
# filled in 1 s; saving every N changes slowed publishing 16x (N = 1000) or 2x (10,000) at
# 100,000 queued, since each save writes the whole store.
AUTOSAVE_INTERVAL_S = 1
# How often the broker publishes $SYS (its drop count among them).
SYS_INTERVAL_S = 2
DEFAULT_MAX_QUEUED_BYTES = 256 * 1024 * 1024
# The bytes are the limit; the count only has to stay out of their way. Not 0 ("no limit"):
# mosquitto 2.0.11 then closes the connection of a client whose QoS 1 publish is denied.
DEFAULT_MAX_QUEUED_MESSAGES = 1_000_000
# Names the embedded broker's server certificate is valid for.
BROKER_HOSTNAMES = ("localhost", "127.0.0.1", "::1")


class MosquittoError(RuntimeError):
    """The embedded broker could not be started."""


@dataclass(frozen=True)
class Listeners:
    """The embedded broker's three loopback listeners and the files each authenticates with
    (``per_listener_settings``): plain TCP (services, and devices in dev only), TLS with a
    device's password, and mutual TLS where the client certificate's CN is the username."""

    port: int
    tls_port: int
    mtls_port: int
    password_file: Path
    acl_file: Path
    tls_dir: Path
    certificate_acl_file: Path
    crl_file: Path

    def blocks(self) -> list[str]:
        auth = (
            f"allow_anonymous false\npassword_file {self.password_file}\nacl_file {self.acl_file}\n"
        )
        server = (
            f"cafile {self.tls_dir / tls.CA_CERT}\ncertfile {self.tls_dir / tls.BROKER_CERT}\n"
            f"keyfile {self.tls_dir / tls.BROKER_KEY}\n"
        )
        return [
            f"listener {self.port} 127.0.0.1\n{auth}",
            f"listener {self.tls_port} 127.0.0.1\n{server}{auth}",
            f"listener {self.mtls_port} 127.0.0.1\n{server}"
            "require_certificate true\nuse_identity_as_username true\n"
            f"crlfile {self.crl_file}\nallow_anonymous false\n"
            f"acl_file {self.certificate_acl_file}\n",
        ]


class EmbeddedMosquitto:
    """A mosquitto process that we own, configured under one folder."""

    def __init__(
        self,
        base_dir: Path,
        port: int = 0,
        max_queued_bytes: int = DEFAULT_MAX_QUEUED_BYTES,
        max_inflight_messages: int = 10_000,
        *,
        max_queued_messages: int = DEFAULT_MAX_QUEUED_MESSAGES,
        accounts: Sequence[str] = DEFAULT_ACCOUNTS,
        extra_acl: str = "",
        tls_dir: Path | None = None,
        tls_port: int = 0,
        mtls_port: int = 0,
    ) -> None:
        """``accounts``: service accounts to make; ``extra_acl``: more ACL ``user`` blocks
        for accounts beyond the platform's own (tests' publisher), kept in ``extra.acl``
        so that the reconciler renders them too. ``tls_dir``: the device CA and the broker's
        certificate (made there once; default ``base_dir/tls``); ``tls_port``/``mtls_port``:
        the TLS listeners' ports (0: free ones). ``max_queued_bytes``: payload bytes kept per
        session beyond those in flight; ``max_queued_messages``: a count limit on top."""
        self.base_dir = base_dir.resolve()
        self.requested_port = port
        self.max_queued_bytes = max_queued_bytes
        self.max_queued_messages = max_queued_messages
        self.max_inflight_messages = max_inflight_messages
        self.account_names = tuple(accounts)
        self.extra_acl = extra_acl
        self.accounts: dict[str, str] = {}
        self.port = 0
        self.tls_dir = (tls_dir or self.base_dir / "tls").resolve()
        self.requested_tls_ports = (tls_port, mtls_port)
        self.tls_port = 0
        self.mtls_port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._user = _service_user()

    # -- where things are ---------------------------------------------------------------------

    @property
    def password_path(self) -> Path:
        return self.base_dir / PASSWORD_FILE

    @property
    def acl_path(self) -> Path:
        return self.base_dir / ACL_FILE

    @property
    def pid_path(self) -> Path:
        return self.base_dir / PID_FILE

    @property
    def service_passwords_path(self) -> Path:
        return self.base_dir / service_accounts.SERVICE_PASSWORDS_FILE

    @property
    def extra_acl_path(self) -> Path:
        return self.base_dir / EXTRA_ACL_FILE

    @property
    def certificate_acl_path(self) -> Path:
        return self.base_dir / CERTIFICATE_ACL_FILE

    @property
    def crl_path(self) -> Path:
        return self.base_dir / CRL_FILE

    @property
    def ca_path(self) -> Path:
        """The device CA's certificate: what devices check the broker against."""
        return self.tls_dir / tls.CA_CERT

    @property
    def file_owner(self) -> str | None:
        """Who must own the password and ACL files (the user mosquitto runs as)."""
        return self._user.pw_name if self._user else None

    def url_for(self, account: str) -> str:
        """``mqtt://account:password@127.0.0.1:port`` of one of the broker's accounts."""
        return f"mqtt://{account}:{self.accounts[account]}@127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The ingest account's URL (what `lifebox ingest` is given)."""
        return self.url_for(files.INGEST)

    @property
    def anonymous_url(self) -> str:
        """The broker's address with no account (refused: anonymous access is off)."""
        return f"mqtt://127.0.0.1:{self.port}"

    def service_entries(self) -> list[tuple[str, str]]:
        return service_accounts.read_service_entries(self.service_passwords_path)

    # -- configuration ------------------------------------------------------------------------

    def write_auth(self) -> None:
        """Accounts and their hashes, and the password and ACL files with the service
        accounts only. Devices a previous run's reconciler wrote are dropped on purpose: one
        revoked while nothing ran must not log in before the reconciler's first pass (which
        adds the live ones back within seconds)."""
        self.accounts = service_accounts.ensure_service_accounts(self.base_dir, self.account_names)
        files.write_if_changed(self.extra_acl_path, self.extra_acl)
        owner = self.file_owner
        files.write_if_changed(
            self.password_path, files.password_file(self.service_entries()), owner
        )
        files.write_if_changed(self.acl_path, files.acl_file(self.extra_acl), owner)
        self._write_tls(owner)

    def _write_tls(self, owner: str | None) -> None:
        """The device CA and server certificate (made once), and the mutual-TLS listener's
        files: an ACL that admits no certificate until the reconciler's first pass, and the
        last revocation list (or an empty one), which only ever refuses more."""
        authority = tls.ensure_dev_pki(self.tls_dir, BROKER_HOSTNAMES)
        files.write_if_changed(self.certificate_acl_path, certificate_acl_file([]), owner)
        if not self.crl_path.exists():
            files.write_if_changed(self.crl_path, authority.revocation_list([], 1), owner)
        if self._user is not None:  # the broker reads its certificate, never the CA's key
            for name in (tls.CA_CERT, tls.BROKER_CERT, tls.BROKER_KEY):
                os.chown(self.tls_dir / name, self._user.pw_uid, self._user.pw_gid)

    def listeners(self, port: int) -> Listeners:
        return Listeners(
            port,
            self.tls_port,
            self.mtls_port,
            self.password_path,
            self.acl_path,
            self.tls_dir,
            self.certificate_acl_path,
            self.crl_path,
        )

    def write_config(self, port: int) -> Path:
        data = self.base_dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        self.write_auth()
        conf = self.base_dir / "mosquitto.conf"
        conf.write_text(
            "# Generated by lifebox; edits are overwritten on the next start.\n"
            + "per_listener_settings true\n"
            + "".join(self.listeners(port).blocks())
            # The reconciler reads it to SIGHUP this broker after it rewrites the files.
            + f"pid_file {self.pid_path}\n"
            "persistence true\n"
            f"persistence_location {data}/\n"
            f"autosave_interval {AUTOSAVE_INTERVAL_S}\n"
            "autosave_on_changes false\n"
            f"max_queued_bytes {self.max_queued_bytes}\n"
            f"max_queued_messages {self.max_queued_messages}\n"
            f"max_inflight_messages {self.max_inflight_messages}\n"
            "max_packet_size 1048576\n"
            "persistent_client_expiration 7d\n"
            f"sys_interval {SYS_INTERVAL_S}\n"
            "log_dest stderr\n"
            "log_type error\n"
            "log_type warning\n"
            "log_type notice\n"
            "connection_messages false\n"
        )
        if self._user is not None:
            uid, gid = self._user.pw_uid, self._user.pw_gid
            for path in (self.base_dir, data, conf, *data.iterdir()):
                os.chown(path, uid, gid)
            for path in (self.password_path, self.acl_path, self.certificate_acl_path):
                os.chown(path, uid, gid)
        return conf

    # -- process ------------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> int:
        if self._process is not None:
            return self.port
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            raise MosquittoError("mosquitto not found: apt-get install mosquitto")
        port = self.requested_port or _remembered_port(self.base_dir)
        if not port or not port_is_free(port):
            port = free_port()
        self.tls_port, self.mtls_port = (
            wanted if wanted and port_is_free(wanted) else free_port()
            for wanted in self.requested_tls_ports
        )
        conf = self.write_config(port)
        log_file = private_log(self.base_dir / "mosquitto.log")
        self._process = subprocess.Popen(
            [binary, "-c", str(conf)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            user=self._user.pw_uid if self._user else None,
            group=self._user.pw_gid if self._user else None,
            process_group=0,
        )
        log_file.close()
        self.port = port
        if not wait_for_port(port, timeout=timeout) or self._process.poll() is not None:
            self.stop()
            raise MosquittoError(
                f"mosquitto did not start on port {port}; see {self.base_dir / 'mosquitto.log'}"
            )
        (self.base_dir / "port").write_text(f"{port}\n")
        return port

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM: mosquitto saves its persistence file and exits."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """SIGKILL, as a crash: nothing is saved beyond the last autosave."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None


def embedded_mqtt_url(base_dir: Path, port: int, account: str = files.INGEST) -> str | None:
    """An account's URL on the embedded broker under ``base_dir`` (None when it has none)."""
    password = service_accounts.load_accounts(base_dir).get(account)
    return f"mqtt://{account}:{password}@127.0.0.1:{port}" if password and port else None


def _service_user() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        return None  # mosquitto then keeps running as root, as its own config allows


def _remembered_port(base_dir: Path) -> int:
    try:
        return int((base_dir / "port").read_text().strip())
    except (OSError, ValueError):
        return 0
