"""Every LifeBox setting, in one place.

Settings come from the environment (prefix ``LIFEBOX_``) or a ``.env`` file. In ``dev`` mode
anything left unset is generated under ``home`` (the embedded PostgreSQL and mosquitto, the
JWT signing key); in ``prod`` mode an unsafe or missing setting stops the process with a
clear message instead (see :func:`Settings.production_problems`).
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Mode(StrEnum):
    """How strict the process is about its configuration."""

    DEV = "dev"
    PROD = "prod"


class LogFormat(StrEnum):
    """How log records are written: JSON lines for machines, text for people."""

    JSON = "json"
    TEXT = "text"
    AUTO = "auto"


class Settings(BaseSettings):
    """The effective configuration of a LifeBox process."""

    model_config = SettingsConfigDict(
        env_prefix="LIFEBOX_", env_file=".env", extra="ignore", validate_default=True
    )

    mode: Mode = Field(
        Mode.DEV, description="dev generates what is missing; prod refuses unsafe settings."
    )
    home: Path = Field(
        Path(".lifebox"),
        description="Where dev keeps the embedded cluster, broker, secrets and outbox.",
    )
    log_format: LogFormat = Field(
        LogFormat.AUTO, description="json, text, or auto (text in dev, json in prod)."
    )
    log_level: str = Field("INFO", description="Python logging level name.")

    # Database. Unset means: use the embedded cluster under home (dev only).
    database_url: SecretStr | None = Field(
        None,
        description="Application role DSN (not the owner, no BYPASSRLS). Unset: embedded.",
    )
    owner_database_url: SecretStr | None = Field(
        None, description="Owner role DSN used by `lifebox migrate`/`seed`. Unset: embedded."
    )
    ingest_database_url: SecretStr | None = Field(
        None,
        description="Ingest role DSN (BYPASSRLS, INSERT-only grants: COPY cannot run under "
        "row-level security). Unset: embedded.",
    )
    pg_port: int = Field(0, description="Embedded PostgreSQL port; 0 picks a free one.")
    db_pool_min: int = Field(1, ge=0, description="Minimum connections per pool.")
    db_pool_max: int = Field(10, ge=1, description="Maximum connections per pool.")
    db_pool_acquire_timeout_seconds: float = Field(
        5.0,
        gt=0,
        description="How long an API call waits for a pooled connection; past it the call "
        "fails with RESOURCE_EXHAUSTED and a RetryInfo (`serve` only).",
    )
    db_statement_timeout_ms: int = Field(
        30_000, ge=0, description="statement_timeout of application connections."
    )

    # MQTT. Unset means: the embedded mosquitto (dev only).
    mqtt_url: SecretStr | None = Field(
        None, description="mqtt://user:pass@host:port of the broker. Unset: embedded."
    )
    mqtt_port: int = Field(0, description="Embedded mosquitto port; 0 picks a free one.")
    mqtt_max_queued_mb: int = Field(
        256,
        ge=1,
        description="Embedded broker: payload MiB kept per persistent session beyond those in "
        "flight (ingest while it is slow or down); past it the broker drops what it has "
        "acknowledged, and lifebox_broker_dropped_messages counts it (README: Overload).",
    )
    mqtt_max_inflight_messages: int = Field(
        10_000,
        description="Embedded broker: un-acked QoS 1 messages per client (caps what ingest "
        "may hold while a batch commits; keep >= LIFEBOX_INGEST_RECEIVE_MAXIMUM).",
    )

    # Devices.
    device_type_intervals: dict[str, int] = Field(
        default_factory=dict,
        description="Expected reporting interval in seconds per device type, as a JSON object "
        '(for example {"meter": 900}): the default of new devices of that type.',
    )
    device_default_interval_seconds: int = Field(
        60, ge=1, description="Expected reporting interval of new devices of any other type."
    )

    # gRPC / HTTP.
    grpc_host: str = Field("127.0.0.1", description="gRPC listen address.")
    grpc_port: int = Field(50051, ge=0, description="gRPC listen port; 0 picks a free one.")
    grpc_max_message_bytes: int = Field(
        16 * 1024 * 1024, description="Max gRPC message size, both directions."
    )
    grpc_grace_seconds: float = Field(
        10.0, description="On SIGTERM, in-flight calls get this long to finish."
    )
    grpc_max_deadline_seconds: float = Field(
        60.0, description="Server-side cap on any call's deadline."
    )
    # Concurrency limits of one `serve` process (counted in memory, never shared between
    # replicas): past one, a call fails at once with RESOURCE_EXHAUSTED, QuotaFailure and
    # RetryInfo. A principal is one signed-in user.
    grpc_max_calls_per_principal: int = Field(
        32, ge=1, description="Unary calls one principal may have running at once."
    )
    grpc_max_heavy_calls_per_principal: int = Field(
        2,
        ge=1,
        description="Expensive calls (telemetry reads, batches; interceptors/limits.py "
        "HEAVY_METHODS) one principal may have running at once.",
    )
    grpc_max_streams_per_principal: int = Field(
        16, ge=1, description="Server streams (StreamTelemetry...) one principal may hold open."
    )
    grpc_max_calls_per_server: int = Field(
        1_000, ge=1, description="Unary calls running at once, all callers together."
    )
    grpc_max_heavy_calls_per_server: int = Field(
        4,
        ge=1,
        description="Expensive calls running at once, all callers together; keep it below "
        "LIFEBOX_DB_POOL_MAX so that cheap calls always find a connection.",
    )
    grpc_max_streams_per_server: int = Field(
        2_000, ge=1, description="Server streams open at once, all callers together."
    )
    tls_cert_file: Path | None = Field(None, description="PEM certificate: enables TLS.")
    tls_key_file: Path | None = Field(None, description="PEM private key for tls_cert_file.")
    http_host: str = Field("127.0.0.1", description="HTTP listener (health, metrics, webhooks).")
    http_port: int = Field(8080, ge=0, description="HTTP port of serve; 0 picks a free one.")
    ingest_metrics_port: int = Field(
        9108, ge=0, description="Prometheus port of each ingest worker; 0 picks a free one."
    )

    # Auth.
    jwt_signing_key: SecretStr | None = Field(
        None, description="HS256 key for access tokens. Dev generates one; prod requires it."
    )
    jwt_key_id: str = Field("k1", description="kid stamped on tokens signed with the key.")
    jwt_issuer: str = Field("lifebox", description="iss claim of issued tokens.")
    jwt_audience: str = Field("lifebox-api", description="aud claim of issued tokens.")
    access_token_ttl_seconds: int = Field(900, ge=60, le=3600, description="Access token life.")
    refresh_token_ttl_seconds: int = Field(
        14 * 24 * 3600, ge=3600, description="Refresh token life."
    )
    principal_cache_seconds: float = Field(
        5.0,
        ge=0,
        le=60,
        description="How long `serve` may reuse a caller's principal (user, role, permissions, "
        "assigned devices, client status) without reading the database; 0 turns the cache off. "
        "Changes reach the cache at once by NOTIFY (lifebox_principals); this is only the bound "
        "if a notification were lost, and the cache is bypassed while its listener is down.",
    )
    jwt_previous_keys: SecretStr | None = Field(
        None,
        description="Retired signing keys still accepted while their tokens live, as "
        "'kid=key,kid=key' (key rotation: move the old key here, set a new kid and key).",
    )
    password_min_length: int = Field(
        12, ge=8, le=128, description="Shortest accepted password (policy; max is 128)."
    )
    login_max_failures: int = Field(
        5,
        ge=1,
        description="Password attempts (Login or ChangePassword) from one client address on "
        "one e-mail, without a success, that lock that pair (never the account for everyone); "
        "also the wrong passwords per e-mail, from all addresses, after which the progressive "
        "delay starts.",
    )
    login_lock_seconds: int = Field(
        900,
        ge=1,
        description="How long an (e-mail, address) pair stays locked, from its last attempt "
        "let through; then its count starts again. Also the window the failures are counted in.",
    )
    login_delay_base_seconds: float = Field(
        0.5,
        ge=0,
        le=60,
        description="First wait before checking a password once an e-mail has had "
        "LIFEBOX_LOGIN_MAX_FAILURES wrong ones in a window (any address); doubles with each "
        "further failure. 0 turns the delay off.",
    )
    login_delay_max_seconds: float = Field(
        10.0, ge=0, le=60, description="Longest progressive delay of one password attempt."
    )
    auth_rate_window_seconds: int = Field(
        900, ge=1, description="Window of the login and password-reset rate limits."
    )
    login_attempts_per_address: int = Field(
        100, ge=1, description="Login attempts per client address per window."
    )
    reset_requests_per_account: int = Field(
        3, ge=1, description="Password reset requests per email per window."
    )
    reset_requests_per_address: int = Field(
        20, ge=1, description="Password reset requests and uses per client address per window."
    )
    reset_token_ttl_seconds: int = Field(
        1800, ge=60, le=86_400, description="Life of a password reset token (single use)."
    )
    admin_email: str = Field("admin@lifebox.local", description="First platform admin's email.")
    admin_password: SecretStr | None = Field(
        None, description="First admin's password. Dev generates one into home/credentials."
    )

    # Ingest.
    ingest_batch_readings: int = Field(5000, ge=1, description="Flush a batch at N messages.")
    ingest_batch_bytes: int = Field(
        2 * 1024 * 1024, ge=1024, description="...or at this many payload bytes."
    )
    ingest_batch_ms: int = Field(50, ge=1, description="...or after T milliseconds.")
    ingest_commit_concurrency: int = Field(
        2,
        ge=1,
        le=8,
        description="Batches committing at once per worker (each on its own connection).",
    )
    ingest_facts_interval_ms: int = Field(
        500,
        ge=10,
        description="Catalogue, devices' last seen and live-stream NOTIFYs are merged across "
        "batches and written this often.",
    )
    ingest_receive_maximum: int = Field(
        10_000,
        ge=1,
        le=65535,
        description="MQTT 5 Receive Maximum: un-acked messages a worker holds. Acks follow "
        "commits, so this window must cover a batch being received while the previous one "
        "commits; a batch flushes at half of it at the latest.",
    )
    ingest_client_id: str | None = Field(
        None,
        description="MQTT client id of this worker (its persistent session). Unset: "
        "lifebox-ingest-<hostname>; give each worker on one host its own.",
    )
    ingest_max_payload_bytes: int = Field(256 * 1024, description="Largest accepted payload.")
    ingest_max_readings_per_message: int = Field(1000, description="Readings per message.")
    ingest_max_extra_keys: int = Field(64, description="Unknown keys kept per reading.")
    ingest_max_depth: int = Field(8, description="JSON nesting depth allowed in extra.")
    ingest_max_string_bytes: int = Field(1024, description="Longest accepted string value.")
    ingest_max_past_days: int = Field(30, description="Oldest accepted ts, days before now.")
    ingest_max_future_seconds: int = Field(300, description="ts at most this far ahead.")
    ingest_reject_raw_cap: int = Field(4096, description="Raw bytes kept per stored reject.")
    ingest_unknown_rejects_per_interval: int = Field(
        600,
        ge=0,
        description="Rejects of messages naming no device (malformed or unknown serial, a topic "
        "that isn't ours) a worker stores one by one per interval; past it each is counted in "
        "lifebox_ingest_rejects_total and the interval's counts are stored in one "
        "suppressed_rejects row.",
    )
    ingest_unknown_rejects_interval_s: int = Field(
        60, ge=1, description="The interval of that cap, aligned to the clock."
    )
    ingest_unknown_serial_cache_size: int = Field(
        10_000, ge=1, description="Unknown serials a worker remembers (least recently used out)."
    )

    # Time series.
    telemetry_retention_days: int = Field(90, ge=1, description="Telemetry kept this long.")
    telemetry_max_cells_per_call: int = Field(
        500_000,
        ge=1,
        description="Most values one telemetry call may compute: AggregateTelemetry devices x "
        "buckets x aggregations, QueryTelemetry page size x (fields + 1), "
        "GetLatestTelemetry devices x fields; past it RESOURCE_EXHAUSTED.",
    )
    partition_premake_days: int = Field(7, ge=1, description="Partitions made ahead (partman).")
    maintenance_interval_seconds: int = Field(
        3600,
        ge=10,
        description="How often `lifebox maintain` (and dev) runs partition maintenance.",
    )
    # --- presence (issue 13) ---
    presence_sweep_interval_seconds: float = Field(
        5.0,
        gt=0,
        le=3600,
        description="How often the ingest worker holding the presence lease marks online "
        "devices silent past three expected intervals stale.",
    )
    presence_retained_quiet_seconds: float = Field(
        1.0,
        gt=0,
        le=60,
        description="After a restart, the retained statuses are read until none arrived for "
        "this long (they come right after the subscription).",
    )

    # --- ops-db (issue 19) ---
    backup_database_url: SecretStr | None = Field(
        None,
        description="DSN `lifebox db backup` and `db status` read with (role lifebox_backup: "
        "BYPASSRLS, reads everything, writes nothing). Unset: the embedded cluster's.",
    )
    superuser_database_url: SecretStr | None = Field(
        None,
        description="A superuser's DSN for `lifebox db restore` and `db reset` (they create "
        "databases and extensions). Unset: the embedded cluster's superuser.",
    )
    replica_database_url: SecretStr | None = Field(
        None,
        description="A streaming standby's DSN: `lifebox db status` shows its replay lag.",
    )
    # --- end ops-db ---

    # --- broker reconciler (issue 13) ---
    broker_sync_database_url: SecretStr | None = Field(
        None,
        description="DSN of `lifebox broker-sync` (role lifebox_broker_sync: SELECT on the "
        "credential, device and client columns it renders, nothing else). Unset: embedded.",
    )
    broker_password_file: Path | None = Field(
        None,
        description="The broker's password file broker-sync writes (service accounts plus one "
        "line per live device credential). Unset: the embedded broker's, home/mqtt/passwd.",
    )
    broker_acl_file: Path | None = Field(
        None, description="The broker's ACL file broker-sync writes. Unset: home/mqtt/acl."
    )
    broker_pid_file: Path | None = Field(
        None,
        description="The broker's pid file (mosquitto's pid_file), read before each SIGHUP. "
        "Unset: home/mqtt/mosquitto.pid.",
    )
    broker_service_passwords_file: Path | None = Field(
        None,
        description="Service accounts' `user:$7$...` lines (deploy/mosquitto/make-passwd.sh), "
        "merged with the devices' entries; broker-sync never sees their passwords. Unset: "
        "home/mqtt/service.passwd.",
    )
    broker_service_acl_file: Path | None = Field(
        None,
        description="Optional extra ACL `user` blocks appended after the service accounts' "
        "own (the test suite's publisher). Unset: home/mqtt/extra.acl if it exists.",
    )
    broker_file_owner: str | None = Field(
        None,
        description="System user the password and ACL files are given to (the broker's; "
        "files are 0600). Unset: whoever runs broker-sync.",
    )
    broker_sync_interval_seconds: float = Field(
        300.0,
        ge=1,
        description="Full reconciliation pass this often, besides the NOTIFY-driven ones "
        "(a safety net for a lost notification or an edited file).",
    )
    broker_sync_debounce_ms: int = Field(
        200, ge=0, le=10_000, description="Wait after a change notice before a pass."
    )
    broker_sync_lease_retry_seconds: float = Field(
        1.0,
        gt=0,
        le=60,
        description="How often a broker-sync copy without the lease tries to take it.",
    )
    broker_sync_metrics_port: int = Field(
        9109, ge=0, description="Prometheus port of broker-sync; 0 picks a free one."
    )
    broker_sync_lease_key: int = Field(
        0x11FEB5C1,  # not maintain's 0x11FEB0C6, presence's 0x11FEB0C7 or alarms' 0x11FEA1A2
        description="Advisory lock key of the reconciler's lease: one holder per key. Copies "
        "reconciling the same broker share it; one reconciling another broker's files (a "
        "second broker on the same database) needs a key of its own.",
    )

    # --- device certificates and TLS (issue 13) ---
    device_ca_cert_file: Path | None = Field(
        None,
        description="The device CA's certificate (PEM): it signs device certificates "
        "(CreateDeviceCredential, kind CERTIFICATE) and the broker's revocation list. Unset: "
        "the embedded CA of `lifebox dev`, home/tls/ca.crt (made at its first start).",
    )
    device_ca_key_file: Path | None = Field(
        None,
        description="The device CA's private key (PEM, EC), read by `serve` and `broker-sync` "
        "only. Unset: home/tls/ca.key.",
    )
    broker_sync_mqtt_url: SecretStr | None = Field(
        None,
        description="mqtt://lifebox-broker-admin:pass@host:port: the account broker-sync "
        "takes over a revoked certificate's live session with (it may publish or subscribe "
        "to nothing). Unset: the embedded broker's.",
    )
    device_certificate_days: int = Field(
        365, ge=1, le=3650, description="Validity of a device certificate LifeBox signs."
    )
    broker_certificate_acl_file: Path | None = Field(
        None,
        description="The mutual-TLS listener's ACL broker-sync writes (one `user` block per "
        "admitted certificate). Unset: home/mqtt/acl-certs.",
    )
    broker_crl_file: Path | None = Field(
        None,
        description="The revocation list broker-sync signs for the mutual-TLS listener "
        "(mosquitto's crlfile). Unset: home/mqtt/crl.pem.",
    )
    mqtt_tls_port: int = Field(
        0, ge=0, description="Embedded broker: TLS listener for device passwords; 0: free port."
    )
    mqtt_mtls_port: int = Field(
        0,
        ge=0,
        description="Embedded broker: mutual-TLS listener (the certificate's CN is the "
        "username); 0: a free port.",
    )

    # --- commands (issue 14) ---
    dispatch_database_url: SecretStr | None = Field(
        None,
        description="DSN of `lifebox dispatch` (role lifebox_dispatch: claims outbox jobs, "
        "reads the commands' message columns, moves them to sent/expired). Unset in dev: the "
        "application DSN.",
    )
    dispatch_mqtt_url: SecretStr | None = Field(
        None,
        description="Broker account of `lifebox dispatch` (publishes lifebox/v1/+/commands/+ "
        "only). Unset in dev: the embedded broker's serve account.",
    )
    dispatch_metrics_port: int = Field(
        9110, ge=0, description="Prometheus port of `lifebox dispatch`; 0 picks a free one."
    )
    dispatch_batch_size: int = Field(
        200, ge=1, le=5000, description="Most jobs one dispatcher claims and publishes at once."
    )
    dispatch_concurrency: int = Field(
        2, ge=1, le=32, description="Claim-and-publish loops per dispatcher process."
    )
    dispatch_poll_seconds: float = Field(
        1.0,
        gt=0,
        le=60,
        description="Longest a dispatcher sleeps without a NOTIFY before looking for due jobs.",
    )
    dispatch_puback_timeout_seconds: float = Field(
        10.0, gt=0, le=300, description="How long a claim waits for the broker's PUBACKs."
    )
    commands_retry_interval_seconds: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="A command not delivered this long after a publish is published again "
        "(same id), up to its template's max_retries.",
    )
    # --- end commands ---

    # --- streams (issue 21) ---
    stream_buffer_items: int = Field(
        100_000,
        ge=1,
        description="What one server stream may have queued for a client that reads slower "
        "than it produces (StreamTelemetry: rows; the other streams: changes); past it the "
        "stream ends with RESOURCE_EXHAUSTED and the client resumes from the newest time it "
        "received (lifebox_stream_overflows_total counts them).",
    )
    # --- end streams ---

    # --- billing (issue 16) ---
    billing_enabled: bool = Field(
        False,
        description="Take payments through Fawry in prod (the webhook, CreateFawryPayment): "
        "serve then refuses to start without the merchant code, the secure key, an https "
        "base URL and a webhook port of its own. In dev, payments work whenever the merchant "
        "code and key are set.",
    )
    fawry_merchant_code: str | None = Field(
        None, description="Fawry merchant code (from Fawry's merchant onboarding)."
    )
    fawry_secure_key: SecretStr | None = Field(
        None, description="Fawry secure key: signs requests and verifies notifications. Secret."
    )
    fawry_base_url: str = Field(
        "https://atfawry.fawrystaging.com",
        description="Fawry API base; staging by default (prod: https://www.atfawry.com).",
    )
    fawry_timeout_seconds: float = Field(
        10.0, gt=0, le=60, description="Timeout of one call to Fawry's API."
    )
    fawry_payment_expiry_hours: int = Field(
        72, ge=1, le=24 * 30, description="A PAYATFAWRY reference number's lifetime."
    )
    fawry_webhook_host: str = Field(
        "127.0.0.1",
        description="Address of the public payment-webhook listener (only /webhooks/fawry; "
        "put TLS on it or on the load balancer in front of it).",
    )
    fawry_webhook_port: int | None = Field(
        None,
        ge=0,
        description="Port of that public listener. Unset: the webhook joins the internal "
        "HTTP listener (dev only: prod mode requires a separate port, so /metrics and "
        "/healthz are never on the public one).",
    )
    fawry_webhook_max_bytes: int = Field(
        64 * 1024, ge=1024, description="Largest notification body accepted (413 past it)."
    )
    billing_grace_days: int = Field(
        7,
        ge=0,
        description="Days a subscription may stay past due before its client is suspended "
        "with reason billing (lifted automatically once settled).",
    )
    billing_postpaid_due_days: int = Field(
        14, ge=0, description="Days after invoicing a postpaid period falls due."
    )

    @property
    def fawry_active(self) -> bool:
        """Whether this process takes Fawry payments (billing issue 16)."""
        configured = bool(self.fawry_merchant_code) and self.fawry_secure_key is not None
        return configured and (self.mode is Mode.DEV or self.billing_enabled)

    # --- end billing (issue 16) ---

    # --- calculated metrics (issue 17) ---
    formulas_enabled: bool = Field(
        True,
        description="Ingest workers evaluate enabled calculation formulas on each batch's "
        "accepted readings and commit their device_data_points with the readings.",
    )
    formula_budget_ms: int = Field(
        50,
        ge=1,
        description="CEL time budget per batch for formulas; values past it become no point "
        '(counted in lifebox_ingest_points_skipped_total{reason="over_budget"}).',
    )
    # --- end calculated metrics (issue 17) ---

    # --- files (issue 17) ---
    files_store: str = Field(
        "postgres",
        pattern="^(postgres|local)$",
        description="Where uploaded files' bytes go: postgres (chunked rows, seen by every "
        "serve replica, included in backups) or local (files_dir, one node only).",
    )
    files_dir: Path | None = Field(
        None, description="The local store's directory. Unset: <home>/files."
    )
    files_max_bytes: int = Field(
        25 * 1024 * 1024, ge=1, description="The largest file an upload may carry."
    )
    files_quota_bytes: int = Field(
        1024 * 1024 * 1024,
        ge=0,
        description="Bytes each tenant's files may use in all, unless its "
        "client_file_usage.quota_bytes says otherwise.",
    )
    files_allowed_types: list[str] = Field(
        [
            "image/png",
            "image/jpeg",
            "image/gif",
            "image/webp",
            "application/pdf",
            "text/plain",
            "text/csv",
            "application/json",
        ],
        description="Content types an upload may claim (JSON list); each is also checked "
        "against the bytes (magic numbers; text types must be UTF-8 with no signature).",
    )
    # --- end files (issue 17) ---

    # --- alarms (issue 15) ---
    alarm_evaluation: bool = Field(
        True, description="Ingest workers evaluate alarm rules on committed readings."
    )
    alarm_grace_ms: int = Field(
        300,
        ge=0,
        le=60_000,
        description="A device is evaluated this long after a commit named it, so readings "
        "received before it by another worker (or batch) are committed first and evaluated "
        "in time order; also the least latency from a reading's commit to its event.",
    )
    alarm_rules_ttl_ms: int = Field(
        1000, ge=0, description="Ingest re-reads a tenant's alarm rules this often."
    )
    alarm_budget_ms: int = Field(
        200,
        ge=1,
        description="CEL time budget per device and evaluation; readings past it are "
        "evaluated in the next round (counted in lifebox_alarm_budget_exceeded_total).",
    )
    alarm_sweep_interval_s: float = Field(
        5.0,
        gt=0,
        description="How often the alarm sweeper (one ingest worker at a time, under a "
        "lease) looks for devices whose readings are past their watermark.",
    )
    # --- end alarms (issue 15) ---
    # --- alarms-eval (issue 15) ---
    alarm_lateness_s: float = Field(
        60.0,
        ge=0,
        le=86_400,
        description="Readings committed within this long of their reading time are "
        "evaluated in time order by every alarm rule; older ones are late: evaluated on "
        "arrival by threshold, range and expression rules, skipped by duration, dwell and "
        "rate rules, and counted in lifebox_alarm_late_readings_total.",
    )
    # --- end alarms-eval ---
    # --- alarm-reactions (issue 15) ---
    reactions_metrics_port: int = Field(
        9111, ge=0, description="Prometheus port of `lifebox reactions`; 0 picks a free one."
    )
    reactions_batch_size: int = Field(
        20, ge=1, le=500, description="Reaction jobs one worker claims at a time."
    )
    reactions_poll_seconds: float = Field(
        1.0, gt=0, description="`lifebox reactions` looks for due jobs at least this often."
    )
    reactions_lease_seconds: float = Field(
        60.0,
        gt=0,
        description="A claimed job is due again after this long if its worker died before "
        "recording it (at least once: receivers deduplicate by X-LifeBox-Delivery).",
    )
    reactions_max_attempts: int = Field(
        8, ge=1, le=100, description="Attempts of a reaction before its outcome is failed."
    )
    reactions_backoff_seconds: float = Field(
        2.0, gt=0, description="First retry delay of a reaction; doubled on every attempt."
    )
    reactions_backoff_max_seconds: float = Field(
        600.0, gt=0, description="Longest delay between two attempts of a reaction."
    )
    reactions_webhook_timeout_seconds: float = Field(
        10.0, gt=0, le=60, description="A webhook POST that takes longer has failed."
    )
    reactions_failing_after: int = Field(
        5,
        ge=1,
        description="Consecutive failures after which a webhook endpoint is marked failing.",
    )
    reactions_failing_retry_minutes: float = Field(
        15.0,
        gt=0,
        description="A failing webhook endpoint is tried at most this often (its jobs wait).",
    )
    # --- end alarm-reactions ---

    # Outbound mail (password resets): dev writes to home/outbox.
    public_base_url: str = Field(
        "http://localhost:8080", description="Base of links sent to users."
    )

    def production_problems(self, process: str | None = None) -> list[str]:
        """What makes this configuration unsafe to run outside dev; empty when fine.

        For a ``process`` (a key of :data:`PROCESS_CREDENTIALS`), the credentials it needs
        are required and any other credential it was given is refused: each process holds
        only what it uses.
        """
        if self.mode is Mode.DEV:
            return []
        problems = []
        if process is not None:
            needed = PROCESS_CREDENTIALS[process]
            for name in CREDENTIALS:
                is_set = getattr(self, name) is not None
                if name in needed and not is_set:
                    problems.append(f"LIFEBOX_{name.upper()} is required by `lifebox {process}`")
                elif name not in needed and is_set:
                    problems.append(
                        f"LIFEBOX_{name.upper()} is set, but `lifebox {process}` does not use "
                        "it: remove it from this process's environment (least privilege)"
                    )
        key = self.jwt_signing_key
        if process in (None, "serve"):  # only the API signs and verifies tokens
            if key is None:
                problems.append("LIFEBOX_JWT_SIGNING_KEY is required in prod mode")
            elif len(key.get_secret_value()) < MIN_JWT_KEY_LENGTH:
                problems.append("LIFEBOX_JWT_SIGNING_KEY must be at least 32 characters")
            if self.jwt_previous_keys is not None:
                problems += _previous_key_problems(self.jwt_previous_keys.get_secret_value())
        for name in CREDENTIALS:
            value = getattr(self, name)
            if value is not None and _has_default_password(value.get_secret_value()):
                problems.append(f"LIFEBOX_{name.upper()} uses a default password")
        if (self.tls_cert_file is None) and self.grpc_host not in ("127.0.0.1", "::1", "localhost"):
            problems.append("gRPC on a non-loopback address needs LIFEBOX_TLS_CERT_FILE")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            problems.append("LIFEBOX_TLS_CERT_FILE and LIFEBOX_TLS_KEY_FILE go together")
        # --- billing (issue 16) ---
        if process in (None, "serve") and self.billing_enabled:  # refuse, never half-enable
            if not self.fawry_merchant_code:
                problems.append("LIFEBOX_FAWRY_MERCHANT_CODE is required for billing in prod")
            if self.fawry_secure_key is None or not self.fawry_secure_key.get_secret_value():
                problems.append("LIFEBOX_FAWRY_SECURE_KEY is required for billing in prod")
            if self.fawry_webhook_port is None:
                problems.append(
                    "LIFEBOX_FAWRY_WEBHOOK_PORT is required in prod: the public webhook "
                    "listener must not serve /metrics"
                )
            elif self.fawry_webhook_port == self.http_port:
                problems.append("LIFEBOX_FAWRY_WEBHOOK_PORT must differ from LIFEBOX_HTTP_PORT")
            if not self.fawry_base_url.startswith("https://"):
                problems.append("LIFEBOX_FAWRY_BASE_URL must be https:// in prod")
            elif "fawrystaging" in self.fawry_base_url:
                problems.append(
                    "LIFEBOX_FAWRY_BASE_URL is Fawry's staging: set the production base "
                    "(https://www.atfawry.com) in prod"
                )
        # --- end billing (issue 16) ---
        return problems

    @property
    def effective_log_format(self) -> LogFormat:
        if self.log_format is LogFormat.AUTO:
            return LogFormat.TEXT if self.mode is Mode.DEV else LogFormat.JSON
        return self.log_format

    def masked(self) -> dict[str, Any]:
        """Every setting with its value, secrets shown as ``**********``."""
        out: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = "**********"
            elif isinstance(value, Path):
                value = str(value)
            elif isinstance(value, StrEnum):
                value = value.value
            out[name] = value
        return out


CREDENTIALS = (
    "database_url",
    "owner_database_url",
    "ingest_database_url",
    "mqtt_url",
    "broker_sync_database_url",  # --- broker reconciler (issue 13)
    "broker_sync_mqtt_url",  # --- device certificates (issue 13)
    "dispatch_database_url",  # --- commands (issue 14)
    "dispatch_mqtt_url",  # --- commands (issue 14)
)
# What each long-running or administrative process may hold (README: who holds what).
PROCESS_CREDENTIALS: dict[str, tuple[str, ...]] = {
    "serve": ("database_url",),
    "ingest": ("ingest_database_url", "mqtt_url"),
    "migrate": ("owner_database_url",),
    "seed": ("owner_database_url",),
    "maintain": ("owner_database_url",),
    # --- broker reconciler (issue 13) ---
    "broker-sync": ("broker_sync_database_url", "broker_sync_mqtt_url"),
    "pki": (),  # --- device certificates (issue 13): files only, no credential
    # --- commands (issue 14) ---
    "dispatch": ("dispatch_database_url", "dispatch_mqtt_url"),
    # --- alarm-reactions (issue 15) ---: the app role, no broker account, no signing key
    "reactions": ("database_url",),
}

MIN_JWT_KEY_LENGTH = 32


def parse_previous_keys(value: str) -> dict[str, str]:
    """``LIFEBOX_JWT_PREVIOUS_KEYS`` (``kid=key,kid=key``) as kid → key, first one winning;
    ValueError when an item is not ``kid=key``."""
    keys: dict[str, str] = {}
    for item in value.split(","):
        kid, sep, key = item.strip().partition("=")
        if not sep or not kid or not key:
            raise ValueError("LIFEBOX_JWT_PREVIOUS_KEYS must be 'kid=key,kid=key'")
        keys.setdefault(kid, key)
    return keys


def _previous_key_problems(value: str) -> list[str]:
    """A retired key still verifies tokens, so it must be as strong as the current one."""
    try:
        keys = parse_previous_keys(value)
    except ValueError as exc:
        return [str(exc)]
    return [
        f"LIFEBOX_JWT_PREVIOUS_KEYS: the key of kid {kid!r} must be at least "
        f"{MIN_JWT_KEY_LENGTH} characters"
        for kid, key in keys.items()
        if len(key) < MIN_JWT_KEY_LENGTH
    ]


_DEFAULT_PASSWORDS = ("password", "postgres", "lifebox", "changeme", "secret", "admin")


def _has_default_password(url: str) -> bool:
    from urllib.parse import urlsplit

    password = urlsplit(url).password
    return password is not None and password.lower() in _DEFAULT_PASSWORDS


def describe_settings() -> list[tuple[str, str, str]]:
    """(environment variable, default, description) of every setting, for docs and --help."""
    rows = []
    for name, field in Settings.model_fields.items():
        default = field.default
        shown = default.value if isinstance(default, StrEnum) else default
        rows.append((f"LIFEBOX_{name.upper()}", repr(shown), field.description or ""))
    return rows
