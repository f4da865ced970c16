#!/usr/bin/env bash
# The README's commands, run the way a new user runs them, so that one that breaks fails CI
# (scripts/test.sh runs this):
#
#   1. `cargo run -- serve` (no --bin: `cargo run` must pick the registry) with nothing
#      configured, on a fresh data directory: the README's skopeo push of a docker-archive,
#      a pull compared byte for byte, the gateway's curl commands, then SIGTERM and exit 0;
#   2. "Turning on authentication" on the same data directory: `user add` (password on
#      stdin), `grant`, `TOKEN=$(ipfs-registry token create ...)`, `serve` with
#      IPFS_REGISTRY_AUTH__ENABLED=true; pushes with a password and with the robot token,
#      an anonymous push refused;
#   3. `scripts/run.sh` (PostgreSQL and the IPFS node) on a fresh database: push, pull.
#
# Between 1 and 2, `ipfs-registry config` must accept the README's example registry.toml.
#
# The debug profile (RUN_PROFILE=dev for run.sh): a release build would cost minutes and
# exercise the same commands. Each registry listens on 127.0.0.1:0 and its address is read
# from its log, so no port can be taken from under it; the data directories are temporary;
# everything started is stopped however this ends.
set -Eeuo pipefail
cd "$(dirname "$0")/.."
root=$PWD
source scripts/services.sh

say() { echo "readme-smoke: $*" >&2; }
fail() { say "FAILED: $*"; exit 1; }
trap 'say "FAILED (line $LINENO): $BASH_COMMAND"' ERR

work=$(mktemp -d "${TMPDIR:-/tmp}/ipfs-registry-readme.XXXXXX")
pid=
database=
cleanup() {
  # The process group: cargo, a rustc it runs, or the registry it became.
  [ -n "$pid" ] && kill -KILL -- "-$pid" 2>/dev/null
  [ -n "$database" ] && psql "$IPFS_REGISTRY_TEST_DATABASE_URL" -qc "DROP DATABASE IF EXISTS $database" >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT

# Only what each step sets reaches the registry.
for var in $(compgen -e | grep '^IPFS_REGISTRY_' | grep -v '^IPFS_REGISTRY_TEST_' || true); do
  unset "$var"
done
# Nor NO_COLOR: a log file must come out without colour codes on its own.
unset NO_COLOR
registry_bin="$root/target/debug/ipfs-registry"

# skopeo isolated from the host's container configuration and logins.
mkdir -p "$work/skopeo/tmp"
echo '{"default":[{"type":"insecureAcceptAnything"}]}' >"$work/skopeo/policy.json"
echo '{"auths":{}}' >"$work/skopeo/auth.json"
: >"$work/skopeo/registries.conf"
skopeo() {
  HOME="$work/skopeo" REGISTRY_AUTH_FILE="$work/skopeo/auth.json" \
    CONTAINERS_REGISTRIES_CONF="$work/skopeo/registries.conf" \
    command skopeo --policy "$work/skopeo/policy.json" --tmpdir "$work/skopeo/tmp" "$@"
}

# image.tar, the README's docker-archive: one layer with one file, its config.
make_image() {
  local dir="$work/image"
  mkdir -p "$dir/rootfs/etc" "$dir/archive"
  echo "pushed by scripts/readme-smoke.sh at $(date -u +%FT%TZ)" >"$dir/rootfs/etc/motd"
  tar -C "$dir/rootfs" --owner=0 --group=0 --numeric-owner --mtime=@0 -cf "$dir/layer.tar" etc
  layer_hex=$(sha256sum "$dir/layer.tar" | cut -d' ' -f1)
  printf '{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "$layer_hex" >"$dir/config.json"
  config_hex=$(sha256sum "$dir/config.json" | cut -d' ' -f1)
  cp "$dir/config.json" "$dir/archive/$config_hex.json"
  mkdir "$dir/archive/$layer_hex"
  cp "$dir/layer.tar" "$dir/archive/$layer_hex/layer.tar"
  printf '[{"Config":"%s.json","RepoTags":["team/app:1.0"],"Layers":["%s/layer.tar"]}]' \
    "$config_hex" "$layer_hex" >"$dir/archive/manifest.json"
  tar -C "$dir/archive" -cf "$work/image.tar" manifest.json "$config_hex.json" "$layer_hex"
}

# Starts "$@" in the background in a process group of its own, stdout and stderr to
# $work/$name.{out,log}; sets pid, host and base once it listens and /readyz answers.
start() {
  local name=$1
  shift
  setsid "$@" >"$work/$name.out" 2>"$work/$name.log" </dev/null &
  pid=$!
  local deadline=$((SECONDS + 900)) address=
  while [ -z "$address" ]; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 40 "$work/$name.log" >&2
      fail "$name exited before listening"
    fi
    ((SECONDS < deadline)) || fail "$name logged no address within 900 s (building included)"
    sleep 0.5
    # Plain text: the log is a file, so it must carry no colour codes to get in the way.
    address=$(sed -n 's/.*event="listening" address=\(127\.0\.0\.1:[0-9]*\).*/\1/p' "$work/$name.log" | head -n 1)
  done
  host=$address
  base="http://$address"
  deadline=$((SECONDS + 60))
  until curl -sf -o /dev/null "$base/readyz"; do
    ((SECONDS < deadline)) || fail "$name: /readyz did not answer 200 within 60 s"
    sleep 0.2
  done
  say "$name: serving on $base"
}

# SIGTERM; the registry must exit 0 within 60 s, having written nothing to stdout.
stop() {
  local name=$1 status=0 deadline=$((SECONDS + 60))
  kill -TERM "$pid"
  while kill -0 "$pid" 2>/dev/null; do
    ((SECONDS < deadline)) || fail "$name did not exit within 60 s of SIGTERM"
    sleep 0.2
  done
  wait "$pid" || status=$?
  pid=
  ((status == 0)) || { tail -n 40 "$work/$name.log" >&2; fail "$name exited with $status after SIGTERM"; }
  [ ! -s "$work/$name.out" ] || fail "$name wrote to stdout: $(head -c 300 "$work/$name.out")"
  say "$name: stopped cleanly"
}

# Pulls team/app:1.0 and compares it byte for byte with what was pushed and what the
# registry serves. $1: extra skopeo flags (credentials).
pull_and_compare() {
  local pulled="$work/pulled-$RANDOM" file hex
  rm -rf "$pulled"
  skopeo copy --src-tls-verify=false $1 "docker://$host/team/app:1.0" "dir:$pulled" >/dev/null
  for file in "$pulled"/*; do
    hex=$(basename "$file")
    [[ $hex =~ ^[0-9a-f]{64}$ ]] || continue
    [ "$(sha256sum "$file" | cut -d' ' -f1)" = "$hex" ] || fail "pulled blob $hex does not match its digest"
  done
  cmp -s "$pulled/$config_hex" "$work/image/config.json" || fail "the pulled config differs from the pushed one"
  local layer_digest
  layer_digest=$(jq -r '.layers[0].digest' "$pulled/manifest.json")
  gzip -dc "$pulled/${layer_digest#sha256:}" | cmp -s - "$work/image/layer.tar" ||
    fail "the pulled layer does not unpack to the pushed one"
  [ "$(jq -r '.config.digest' "$pulled/manifest.json")" = "sha256:$config_hex" ] || fail "manifest names another config"
  manifest_hex=$(sha256sum "$pulled/manifest.json" | cut -d' ' -f1)
  layer="$pulled/${layer_digest#sha256:}"
}

make_image

# ---- 1. cargo run: standalone ----------------------------------------------------------------
say "1. cargo run --locked -- serve (nothing configured; building if needed)"
data="$work/data"
start cargo-run env IPFS_REGISTRY_DATA_DIR="$data" IPFS_REGISTRY_LISTEN=127.0.0.1:0 \
  cargo run --locked -- serve
(cd "$work" && skopeo copy --dest-tls-verify=false docker-archive:image.tar "docker://$host/team/app:1.0" >/dev/null)
pull_and_compare ""
served=$(curl -sf -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
  "$base/v2/team/app/manifests/1.0" | sha256sum | cut -d' ' -f1)
[ "$served" = "$manifest_hex" ] || fail "the pulled manifest is not the bytes the registry serves"
# "Blobs without an IPFS node": the blob's CID, its bytes and its CAR through the gateway.
ipfs_path=$(curl -sfI "$base/v2/team/app/blobs/sha256:$(basename "$layer")" | tr -d '\r' |
  sed -n 's/^x-ipfs-path: //Ip')
[[ $ipfs_path == /ipfs/b* ]] || fail "no X-Ipfs-Path on the blob: '$ipfs_path'"
curl -sf "$base$ipfs_path" | cmp -s - "$layer" || fail "$ipfs_path is not the layer"
car_bytes=$(curl -sf "$base$ipfs_path?format=car" | wc -c)
((car_bytes > $(stat -c %s "$layer"))) || fail "$ipfs_path?format=car is too short ($car_bytes bytes)"
stop cargo-run
[ -f "$data/metadata.sqlite" ] || fail "no metadata.sqlite in the data directory"

# The README's example registry.toml (its only toml block) is a configuration `config` accepts.
awk '/^```toml/ { on = 1; next } /^```/ { on = 0 } on' README.md >"$work/registry.toml"
grep -q '^\[database\]' "$work/registry.toml" || fail "no example registry.toml found in README.md"
"$registry_bin" --config "$work/registry.toml" config >/dev/null 2>"$work/config.log" ||
  { cat "$work/config.log" >&2; fail "ipfs-registry config refuses the README's registry.toml"; }

# ---- 2. authentication -------------------------------------------------------------------------
say "2. user add, grant, token create, serve with IPFS_REGISTRY_AUTH__ENABLED=true"
export IPFS_REGISTRY_DATA_DIR="$data"
admin_pw="admin-pw-$RANDOM$RANDOM"
alice_pw="alice-pw-$RANDOM$RANDOM"
ci_pw="ci-pw-$RANDOM$RANDOM"
# As the README has them, their logs (stderr) kept for a failure.
ipfs-registry() { "$registry_bin" "$@" 2>>"$work/admin.log" || { cat "$work/admin.log" >&2; fail "ipfs-registry $*"; }; }
ipfs-registry user add admin --admin <<<"$admin_pw" >/dev/null
ipfs-registry user add alice <<<"$alice_pw" >/dev/null
ipfs-registry user add ci <<<"$ci_pw" >/dev/null
ipfs-registry grant alice 'team/*' pull,push >/dev/null
ipfs-registry grant ci team/app pull,push >/dev/null
TOKEN=$(ipfs-registry token create --user ci --scope 'repository:team/app:pull,push' --expires 30d)
[[ $TOKEN != *$'\n'* && -n $TOKEN ]] || fail "token create printed more than the token: '$TOKEN'"
start auth env IPFS_REGISTRY_AUTH__ENABLED=true IPFS_REGISTRY_LISTEN=127.0.0.1:0 "$registry_bin" serve
(cd "$work" && skopeo copy --dest-creds "alice:$alice_pw" --dest-tls-verify=false \
  docker-archive:image.tar "docker://$host/team/app:1.0" >/dev/null)
pull_and_compare "--src-creds alice:$alice_pw"
(cd "$work" && skopeo copy --dest-creds "ci:$TOKEN" --dest-tls-verify=false \
  docker-archive:image.tar "docker://$host/team/app:robot" >/dev/null)
if (cd "$work" && skopeo copy --dest-tls-verify=false docker-archive:image.tar \
  "docker://$host/team/app:anonymous" >/dev/null 2>&1); then
  fail "an anonymous push was accepted with authentication on"
fi
if (cd "$work" && skopeo copy --dest-creds "ci:$TOKEN" --dest-tls-verify=false \
  docker-archive:image.tar "docker://$host/team/other:1.0" >/dev/null 2>&1); then
  fail "the robot token pushed outside its scope"
fi
stop auth
unset IPFS_REGISTRY_DATA_DIR

# ---- 3. scripts/run.sh: PostgreSQL and the IPFS node ----------------------------------------------
say "3. scripts/run.sh (PostgreSQL and the IPFS node)"
# Started here if need be, not by run.sh, so that they stay out of its process group.
ensure_postgres
ensure_ipfs_node >/dev/null
database="ipfs_registry_test_readme_$$"
psql "$IPFS_REGISTRY_TEST_DATABASE_URL" -qc "CREATE DATABASE $database" >/dev/null
start run-sh env RUN_PROFILE=dev IPFS_REGISTRY_LISTEN=127.0.0.1:0 \
  IPFS_REGISTRY_DATABASE__URL="${IPFS_REGISTRY_TEST_DATABASE_URL%/*}/$database" \
  IPFS_REGISTRY_DATA_DIR="$work/run-data" scripts/run.sh
(cd "$work" && skopeo copy --dest-tls-verify=false docker-archive:image.tar "docker://$host/team/app:1.0" >/dev/null)
pull_and_compare ""
stop run-sh
say "ok"
