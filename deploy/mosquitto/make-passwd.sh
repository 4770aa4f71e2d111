#!/bin/sh
# One-shot: writes the broker's password file from the compose environment, and the options
# file of the healthcheck account (a random password made here; it may read one $SYS topic).
# Passwords never go on a command line (any local user can read argv): printf is a shell
# builtin, and mosquitto_passwd -U hashes the file in place.
set -eu
umask 077
auth=${AUTH_DIR:-/mosquitto/auth}
f=$auth/passwd
health=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
printf 'lifebox-ingest:%s\nlifebox-serve:%s\ndevice:%s\nlifebox-health:%s\n' \
  "$MQTT_INGEST_PASSWORD" "$MQTT_SERVE_PASSWORD" "$MQTT_DEVICE_PASSWORD" "$health" > "$f"
mosquitto_passwd -U "$f"
mkdir -p "$auth/health"
printf -- '-u lifebox-health\n-P %s\n' "$health" > "$auth/health/mosquitto_sub"
chown -R mosquitto:mosquitto "$auth" 2>/dev/null || true
