#!/usr/bin/env bash
# `make fresh-check`: does a bare Debian 12 go from nothing to `make run` and `make test` by the
# README alone? debootstrap (minbase: not even make, git or ca-certificates) into a folder, the
# stock Debian 12 apt sources (bookworm, -updates, -security), this checkout's HEAD cloned in
# (committed work only, with its history: `make lint` compares protos with HEAD~1), then, as
# root inside a chroot: README's prerequisite line, `make run` (started, checked healthy on
# every port its banner prints, stopped with Ctrl-C: it must exit 0) and `make test`.
# Slow (the whole build and suite from scratch: most of an hour on 2 cores); not in `make test`.
# Runs in a private mount namespace, so nothing it mounts is seen outside or outlives it; on
# exit it ends the processes still running inside the chroot and removes the folder.
#   FRESH_CHECK_DIR=/var/tmp/x    where to build it (default: a new folder in /var/tmp)
#   FRESH_CHECK_KEEP=1            keep the folder afterwards (to look inside)
#   FRESH_CHECK_CHECKOUT=/root/lifebox  where the checkout goes inside (README's clone; 0700)
#   FRESH_CHECK_LOGS=/var/tmp/lifebox-fresh-check   logs of each step
set -euo pipefail
cd "$(dirname "$0")/.."
MIRROR=${FRESH_CHECK_MIRROR:-http://deb.debian.org/debian}
SECURITY=${FRESH_CHECK_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
CHECKOUT=${FRESH_CHECK_CHECKOUT:-/root/lifebox}
LOGS=${FRESH_CHECK_LOGS:-/var/tmp/lifebox-fresh-check}

if [ "$(id -u)" -ne 0 ]; then
  echo "fresh-check needs root (debootstrap, chroot, mounts). Run: sudo make fresh-check" >&2
  exit 1
fi
if ! command -v debootstrap >/dev/null; then
  echo "==> apt-get install debootstrap (on this machine)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap
fi
if [ -z "${LIFEBOX_FRESH_CHECK_NS:-}" ]; then
  export LIFEBOX_FRESH_CHECK_NS=1
  exec unshare --mount --propagation private bash "$0" "$@"
fi

target=${FRESH_CHECK_DIR:-$(mktemp -d /var/tmp/lifebox-fresh.XXXXXX)}
target=$(realpath "$target")
mkdir -p "$target" "$LOGS"
# It becomes /: mktemp's 0700 would keep the postgres and mosquitto users out of everything.
chmod 0755 "$target"
t0=$(date +%s)
phase() { printf '\033[1m==> [%4ds] %s\033[0m\n' "$(($(date +%s) - t0))" "$*"; }

in_chroot_pids() {
  local p
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/root" 2>/dev/null)" = "$target" ] && echo "${p#/proc/}"
  done
  return 0
}
cleanup() {
  local rc=$? pids
  set +e
  pids=$(in_chroot_pids)
  if [ -n "$pids" ]; then
    # shellcheck disable=SC2086
    kill -TERM $pids 2>/dev/null
    sleep 5
    pids=$(in_chroot_pids)
    # shellcheck disable=SC2086
    [ -n "$pids" ] && kill -KILL $pids 2>/dev/null
    sleep 1
  fi
  for m in dev/shm dev/pts dev sys proc; do
    mountpoint -q "$target/$m" && { umount "$target/$m" || umount -l "$target/$m"; }
  done
  cp "$target"/root/fresh-*.log "$LOGS"/ 2>/dev/null
  if [ "${FRESH_CHECK_KEEP:-0}" = 1 ]; then
    echo "kept $target"
  else
    rm -rf --one-file-system "$target"
  fi
  echo "fresh-check: $([ "$rc" -eq 0 ] && echo PASSED || echo "FAILED (exit $rc)") in $(($(date +%s) - t0))s; logs in $LOGS"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

phase "debootstrap bookworm (minbase) into $target"
debootstrap --variant=minbase bookworm "$target" "$MIRROR" >"$LOGS/debootstrap.log" 2>&1
cat >"$target/etc/apt/sources.list" <<EOF
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb $SECURITY bookworm-security main
EOF
cp /etc/resolv.conf "$target/etc/resolv.conf"
# This machine's own certificate authorities (a site behind a TLS-inspecting proxy): a new
# machine on the same network gets them too, or no https download (pip, cargo, npm) works.
# ca-certificates (README's first line) adds them to the system store; the tools are pointed
# at that store, as they are here.
trust=()
if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
  mkdir -p "$target/usr/local/share/ca-certificates"
  cp /usr/local/share/ca-certificates/*.crt "$target/usr/local/share/ca-certificates/"
  bundle=/etc/ssl/certs/ca-certificates.crt
  for var in SSL_CERT_FILE PIP_CERT REQUESTS_CA_BUNDLE NODE_EXTRA_CA_CERTS CURL_CA_BUNDLE \
    GIT_SSL_CAINFO CARGO_HTTP_CAINFO; do
    trust+=("$var=$bundle")
  done
  echo "    with this machine's CAs: $(ls /usr/local/share/ca-certificates)"
fi

phase "the checkout's HEAD ($(git rev-parse --short HEAD)) cloned to $CHECKOUT"
mkdir -p "$target$(dirname "$CHECKOUT")"
chmod 0700 "$target/root"
git clone -q --no-hardlinks "$PWD" "$target$CHECKOUT"

mount -t proc proc "$target/proc"
mount -t sysfs sys "$target/sys"
mount --bind /dev "$target/dev"
mount --bind /dev/pts "$target/dev/pts"
mount -t tmpfs -o mode=1777,nosuid,nodev shm "$target/dev/shm"

cat >"$target/root/fresh-steps.sh" <<'STEPS'
set -euo pipefail
cd "$CHECKOUT"
say() { printf '\033[1m--> [%s] %s\033[0m\n' "$(date -u +%H:%M:%S)" "$*"; }
say "README, bare Debian 12: apt-get update && apt-get install -y make git ca-certificates"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq make git ca-certificates >/dev/null

say "make run (in the background; waiting for its ready banner)"
setsid make run >/root/fresh-make-run.log 2>&1 &
make_pid=$!
for _ in $(seq 1 5400); do
  grep -q "ready in" /root/fresh-make-run.log && break
  kill -0 "$make_pid" 2>/dev/null || { tail -n 40 /root/fresh-make-run.log; echo "make run exited before it was ready"; exit 1; }
  sleep 1
done
grep -q "ready in" /root/fresh-make-run.log || { tail -n 40 /root/fresh-make-run.log; echo "make run not ready after 90 min"; exit 1; }
sed -n '/ready in/,/Ctrl-C/p' /root/fresh-make-run.log
say "checking every port the banner names"
.venv/bin/python - /root/fresh-make-run.log <<'PY'
import re
import sys
import time
import urllib.request

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

# The banner comes once every child is started; each binds its port soon after (as compose
# retries a healthcheck): each gets a minute.
banner = open(sys.argv[1]).read().split("ready in", 1)[1]
urls = re.findall(r"http://[\d.]+:\d+/\w+", banner)
assert any(u.endswith("/healthz") for u in urls), banner
for url in urls:
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                assert response.status == 200, (url, response.status)
                print("ok", url)
                break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
grpc_address = re.search(r"gRPC\s+(\S+:\d+)", banner).group(1)
with grpc.insecure_channel(grpc_address) as channel:
    reply = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(), timeout=60, wait_for_ready=True
    )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING, reply
    print("ok gRPC health", grpc_address)
PY
say "stopping make run with Ctrl-C (lifebox dev must exit 0)"
dev_pid=$(cat "/proc/$make_pid/task/$make_pid/children" | awk '{print $1}')
kill -INT "$dev_pid"
rc=0
wait "$make_pid" || rc=$?
tail -n 3 /root/fresh-make-run.log
[ "$rc" -eq 0 ] || { echo "make run exited $rc after Ctrl-C"; exit 1; }

say "make test"
set +e
make test 2>&1 | tee /root/fresh-make-test.log | grep -E --line-buffered '^(==>|buf breaking|generated code)| passed| failed'
rc=${PIPESTATUS[0]}
set -e
tail -n 30 /root/fresh-make-test.log
[ "$rc" -eq 0 ] || { echo "make test exited $rc"; exit 1; }
say "make run and make test passed"
STEPS

phase "inside the chroot, as root: README's prerequisites, make run, make test"
chroot "$target" /usr/bin/env -i HOME=/root TERM="${TERM:-dumb}" LANG=C.UTF-8 \
  PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin CHECKOUT="$CHECKOUT" "${trust[@]}" \
  /bin/bash /root/fresh-steps.sh 2>&1 | tee "$LOGS/steps.log"
phase "done"
