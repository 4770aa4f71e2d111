#!/bin/sh
# One-shot: writes the broker's password file from the compose environment.
set -eu
f=/mosquitto/auth/passwd
: > "$f"
mosquitto_passwd -b "$f" lifebox-ingest "$MQTT_INGEST_PASSWORD"
mosquitto_passwd -b "$f" lifebox-serve "$MQTT_SERVE_PASSWORD"
mosquitto_passwd -b "$f" device "$MQTT_DEVICE_PASSWORD"
chmod 0700 "$f"
chown mosquitto:mosquitto "$f" 2>/dev/null || true
