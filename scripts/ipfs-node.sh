#!/usr/bin/env bash
# Installs, starts and stops the js-ipfs node (npm ipfs@0.66.1, a Kubo-RPC-compatible
# node) that the test suite talks to. See docs/ipfs-node.md.
#
#   scripts/ipfs-node.sh start [REPO_DIR]   install if needed, init, start; prints the RPC base URL
#   scripts/ipfs-node.sh stop  [REPO_DIR]   SIGTERM the daemon (SIGKILL after a bounded wait)
#   scripts/ipfs-node.sh status [REPO_DIR]  exit 0 if the daemon is running and answering
#   scripts/ipfs-node.sh url                prints the RPC base URL
#
# Environment: IPFS_NODE_API_PORT (45001), IPFS_NODE_GATEWAY_PORT (48080),
# IPFS_NODE_GRPC_PORT (45003), IPFS_NODE_START_TIMEOUT (60 s), IPFS_NODE_STOP_TIMEOUT (20 s),
# IPFS_NODE_INSTALL_TIMEOUT (900 s), IPFS_NODE_SWARM_PORT (unset: no swarm address; set: a
# TCP swarm address on 127.0.0.1, for tests whose nodes exchange blocks, see
# docs/ipfs-node.md), IPFS_NODE_ROUTING (none; dhtserver: a DHT server, online, so that
# IPNS names it publishes resolve on other such nodes).
# Only the URL goes to stdout (last line); progress and errors go to stderr.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NODE_DIR="$ROOT/tests/ipfs-node"
POLYFILL="$NODE_DIR/polyfill.cjs"
JSIPFS="$NODE_DIR/node_modules/.bin/jsipfs"
STAMP="$NODE_DIR/node_modules/.ipfs-node-installed"
INSTALL_LOG="$NODE_DIR/npm-install.log"

API_PORT="${IPFS_NODE_API_PORT:-45001}"
GATEWAY_PORT="${IPFS_NODE_GATEWAY_PORT:-48080}"
GRPC_PORT="${IPFS_NODE_GRPC_PORT:-45003}"
SWARM_PORT="${IPFS_NODE_SWARM_PORT:-}"
ROUTING="${IPFS_NODE_ROUTING:-none}"
START_TIMEOUT="${IPFS_NODE_START_TIMEOUT:-60}"
STOP_TIMEOUT="${IPFS_NODE_STOP_TIMEOUT:-20}"
INSTALL_TIMEOUT="${IPFS_NODE_INSTALL_TIMEOUT:-900}"
URL="http://127.0.0.1:$API_PORT"
DEFAULT_REPO="${TMPDIR:-/tmp}/ipfs-registry-test-node"

log() { echo "ipfs-node: $*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
  sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# Absolute path, without requiring the directory to exist.
abspath() {
  case "$1" in
    /*) printf '%s\n' "$1" ;;
    *) printf '%s\n' "$PWD/$1" ;;
  esac
}

# The peer ID the daemon at $URL reports, or nothing.
api_peer_id() {
  curl -sf -X POST --max-time 3 "$URL/api/v0/id" 2>/dev/null \
    | grep -o '"ID":"[^"]*"' | head -n1 | cut -d'"' -f4 || true
}

# The peer ID stored in the repo's config, or nothing.
repo_peer_id() {
  [[ -f "$REPO/config" ]] || return 0
  grep -o '"PeerID"[[:space:]]*:[[:space:]]*"[^"]*"' "$REPO/config" | head -n1 | cut -d'"' -f4 || true
}

# Prints the daemon's pid if the pid file names a live jsipfs daemon process.
daemon_pid() {
  local pid
  [[ -f "$REPO/daemon.pid" ]] || return 0
  pid="$(tr -dc '0-9' < "$REPO/daemon.pid")"
  [[ -n "$pid" ]] || return 0
  # js-ipfs sets its process title to "ipfs" (cmdline becomes "ipfs"); before that it is "node .../jsipfs daemon".
  if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q 'ipfs'; then
    printf '%s\n' "$pid"
  fi
}

# True when the daemon of this repo is running and its API answers with this repo's identity.
answering() {
  local want got
  want="$(repo_peer_id)"
  got="$(api_peer_id)"
  [[ -n "$got" && "$got" == "$want" ]]
}

install_deps() {
  command -v node >/dev/null || die "node is not installed"
  command -v npm >/dev/null || die "npm is not installed"
  if [[ -x "$JSIPFS" && -f "$STAMP" && ! "$NODE_DIR/package-lock.json" -nt "$STAMP" && ! "$NODE_DIR/package.json" -nt "$STAMP" ]]; then
    return 0
  fi
  # Serialise installs (several repos may be started at once).
  exec 8> "$NODE_DIR/.npm-install.lock"
  flock -w "$INSTALL_TIMEOUT" 8 || die "could not lock $NODE_DIR/.npm-install.lock"
  if [[ -x "$JSIPFS" && -f "$STAMP" && ! "$NODE_DIR/package-lock.json" -nt "$STAMP" && ! "$NODE_DIR/package.json" -nt "$STAMP" ]]; then
    exec 8>&-
    return 0
  fi
  log "npm install in tests/ipfs-node (cold: ~3-4 min; log: $INSTALL_LOG)"
  local start=$SECONDS
  # --no-save: never rewrite the committed package.json / package-lock.json.
  # (npm ci is not usable: an optional dependency's tarball is unreachable from here.)
  if ! (cd "$NODE_DIR" && timeout "$INSTALL_TIMEOUT" npm install --no-save --no-audit --no-fund \
          --loglevel=warn > "$INSTALL_LOG" 2>&1); then
    tail -n 30 "$INSTALL_LOG" >&2 || true
    die "npm install failed (see $INSTALL_LOG)"
  fi
  [[ -x "$JSIPFS" ]] || die "npm install did not provide $JSIPFS"
  touch "$STAMP"
  exec 8>&-
  log "npm install done in $((SECONDS - start)) s"
}

jsipfs() {
  IPFS_PATH="$REPO" NODE_OPTIONS="--require=$POLYFILL ${NODE_OPTIONS:-}" "$JSIPFS" "$@"
}

init_repo() {
  mkdir -p "$REPO"
  if [[ ! -f "$REPO/config" ]]; then
    # An interrupted init can leave a partial repo behind: start it over.
    local f
    for f in blocks datastore keys pins repo.lock version datastore_spec api; do
      rm -rf "${REPO:?}/$f"
    done
    log "initialising repo $REPO (profile test)"
    if ! jsipfs init --profile test > "$REPO/init.log" 2>&1; then
      cat "$REPO/init.log" >&2 || true
      die "jsipfs init failed"
    fi
  fi
  # One direct edit of the JSON config (each `jsipfs config` call costs seconds).
  REPO_CONFIG="$REPO/config" API_PORT="$API_PORT" GATEWAY_PORT="$GATEWAY_PORT" GRPC_PORT="$GRPC_PORT" \
    SWARM_PORT="$SWARM_PORT" ROUTING="$ROUTING" \
    node -e '
      const fs = require("fs")
      const file = process.env.REPO_CONFIG
      const c = JSON.parse(fs.readFileSync(file, "utf8"))
      const e = process.env
      c.Addresses = Object.assign(c.Addresses || {}, {
        API: `/ip4/127.0.0.1/tcp/${e.API_PORT}`,
        Gateway: `/ip4/127.0.0.1/tcp/${e.GATEWAY_PORT}`,
        RPC: `/ip4/127.0.0.1/tcp/${e.GRPC_PORT}`,
        Swarm: e.SWARM_PORT ? [`/ip4/127.0.0.1/tcp/${e.SWARM_PORT}`] : [],
        Announce: [],
        NoAnnounce: [],
        Delegates: []
      })
      c.Bootstrap = []
      c.Discovery = Object.assign(c.Discovery || {}, {
        MDNS: Object.assign((c.Discovery || {}).MDNS || {}, { Enabled: false }),
        webRTCStar: Object.assign((c.Discovery || {}).webRTCStar || {}, { Enabled: false })
      })
      c.Pubsub = Object.assign(c.Pubsub || {}, { Enabled: false })
      c.Routing = Object.assign(c.Routing || {}, { Type: e.ROUTING })
      const out = JSON.stringify(c, null, 2) + "\n"
      if (out !== fs.readFileSync(file, "utf8")) {
        fs.writeFileSync(file + ".tmp", out)
        fs.renameSync(file + ".tmp", file)
      }
    '
}

start() {
  local pid
  pid="$(daemon_pid)"
  if [[ -n "$pid" ]]; then
    if wait_ready "$pid"; then
      log "already running (pid $pid, repo $REPO)"
      echo "$URL"
      return 0
    fi
    die "daemon pid $pid (repo $REPO) is running but $URL does not answer; run: $0 stop $REPO"
  fi

  # Port taken by something else (another repo's daemon, or another program)?
  if curl -s -o /dev/null --max-time 2 "$URL/" 2>/dev/null; then
    die "$URL is already in use by another process (not the daemon of $REPO); set IPFS_NODE_API_PORT or stop it"
  fi

  install_deps
  init_repo
  # Leftovers of a killed daemon would make the new one refuse the repo or the CLI use a dead API.
  rm -rf "$REPO/repo.lock" "$REPO/api" "$REPO/daemon.pid"

  log "starting daemon (repo $REPO, log $REPO/daemon.log)"
  local log_start
  log_start=$(($(stat -c %s "$REPO/daemon.log" 2>/dev/null || echo 0) + 1))
  {
    echo "=== $(date -u +%Y-%m-%dT%H:%M:%SZ) start"
  } >> "$REPO/daemon.log"
  # --offline keeps IPNS records local (it does not stop the swarm): off for a DHT node.
  local offline=--offline
  [[ "$ROUTING" == none ]] || offline=
  IPFS_PATH="$REPO" NODE_OPTIONS="--require=$POLYFILL ${NODE_OPTIONS:-}" \
    setsid "$JSIPFS" daemon $offline --enable-preload=false \
    < /dev/null >> "$REPO/daemon.log" 2>&1 8>&- 9>&- &
  pid=$!
  echo "$pid" > "$REPO/daemon.pid"

  if ! wait_ready "$pid" "$log_start"; then
    tail -n 40 "$REPO/daemon.log" >&2 || true
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$REPO/daemon.pid"
    if port_taken "$log_start"; then
      die "a port was taken before the daemon could bind it; start again with other ports"
    fi
    die "daemon did not answer on $URL within ${START_TIMEOUT}s"
  fi
  log "ready (pid $pid)"
  echo "$URL"
}

# Whether this start's part of the log (from byte $1) says a listener could not bind: js-ipfs
# logs that and keeps running without answering, so waiting longer would not help.
port_taken() {
  tail -c "+$1" "$REPO/daemon.log" 2>/dev/null |
    grep -qE 'could not listen on any available address|EADDRINUSE'
}

# Waits until the daemon answers with this repo's identity; fails early if the process dies
# or (given this start's log offset, $2) could not bind a port.
wait_ready() {
  local pid="$1" log_start="${2:-}" deadline=$((SECONDS + START_TIMEOUT))
  while ((SECONDS < deadline)); do
    if answering; then return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then
      log "daemon process $pid exited"
      return 1
    fi
    if [[ -n "$log_start" ]] && port_taken "$log_start"; then
      log "daemon could not bind a port"
      return 1
    fi
    sleep 0.3
  done
  return 1
}

stop() {
  local pid deadline
  pid="$(daemon_pid)"
  if [[ -z "$pid" ]]; then
    log "not running (repo $REPO)"
    rm -f "$REPO/daemon.pid"
    return 0
  fi
  log "stopping pid $pid"
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$((SECONDS + STOP_TIMEOUT))
  while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
  if kill -0 "$pid" 2>/dev/null; then
    log "still alive after ${STOP_TIMEOUT}s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.5
    rm -rf "$REPO/repo.lock" "$REPO/api"
  fi
  rm -f "$REPO/daemon.pid"
  log "stopped"
}

cmd="${1:-}"
[[ -n "$cmd" ]] || usage
shift
REPO="$(abspath "${1:-$DEFAULT_REPO}")"

# Serialise concurrent start/stop on the same repo.
lock() {
  mkdir -p "$REPO"
  exec 9> "$REPO/.ipfs-node.start.lock"
  flock -w $((INSTALL_TIMEOUT + START_TIMEOUT + 60)) 9 || die "could not lock $REPO"
}

case "$cmd" in
  start) lock; start ;;
  stop) lock; stop ;;
  status)
    pid="$(daemon_pid)"
    if [[ -n "$pid" ]] && answering; then log "running (pid $pid) at $URL"; exit 0; fi
    log "not running"; exit 1 ;;
  url) echo "$URL" ;;
  *) usage ;;
esac
