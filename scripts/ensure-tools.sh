#!/usr/bin/env bash
# Makes sure the command-line tools the integration tests drive are installed: skopeo (the
# OCI client of tests/skopeo_roundtrip.rs), Chromium (the browser of tests/browse.rs),
# CNCF distribution (Debian's docker-registry: the reference the benchmark, and its smoke
# test tests/bench_smoke.rs, measure against), nginx (Debian's nginx-light: the bench's static
# file server, the limit it measures against) and FUSE's mount helper (Debian's fuse3: the
# power-cut file system of tests/common/powercut.rs mounts with it when mount(2) is denied).
# Also the container clients of tests/clients_*.rs (tests/common/clients.rs): Docker's
# engine and CLI (Debian's docker.io; checked by dockerd, since a docker CLI alone may be on
# PATH), podman, containerd with ctr, and busybox-static (the rootfs of the images those
# tests build). On a machine with systemd the packages start their system daemons; the tests
# never use them, they start their own.
# Idempotent and quiet unless something fails.
# Installing needs root (CI machines run the test script as root); Debian/Ubuntu only.
set -euo pipefail

# Each tool as command:package, where the Debian package is named otherwise.
tools=(skopeo chromium docker-registry nginx:nginx-light fusermount3:fuse3 dockerd:docker.io
  podman containerd busybox:busybox-static)
missing=()
for tool in "${tools[@]}"; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool#*:}")
done
((${#missing[@]} == 0)) && exit 0

fail() { echo "ensure-tools: $*" >&2; exit 1; }

if [[ "$(id -u)" != 0 ]]; then
  fail "missing ${missing[*]}; run this script as root or install it yourself (apt-get install ${missing[*]})"
fi
command -v apt-get >/dev/null 2>&1 || fail "missing ${missing[*]} and apt-get is not available"

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if ! { DEBIAN_FRONTEND=noninteractive apt-get update -qq \
  && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } \
  >"$log" 2>&1; then
  tail -n 30 "$log" >&2
  fail "apt-get install ${missing[*]} failed"
fi
for tool in "${tools[@]}"; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || fail "${tool%%:*} is still missing after apt-get install"
done
# The packages enable services (docker-registry on port 5000, nginx on 80); the benchmark
# starts its own instances.
for service in docker-registry:docker-registry nginx:nginx-light; do
  if [[ " ${missing[*]} " == *" ${service#*:} "* ]] && command -v systemctl >/dev/null 2>&1; then
    systemctl disable --now "${service%%:*}" >/dev/null 2>&1 || true
  fi
done
