#!/usr/bin/env bash
# Validates the deployment files offline with real tools (see deploy/validate/check.mjs):
# the Akash SDL with Akash's own SDL library (npm @akashnetwork/chain-sdk), broken copies of
# it must be rejected, the compose file against the Compose Specification's JSON schema, and
# the two stacks must agree with each other and with the registry's own settings (checked by
# running the registry binary's `config` subcommand). Then scripts/check-image-context.sh
# --controls compiles the registry from the container image's exact build context (the
# files .dockerignore lets through, placed by deploy/Dockerfile's COPY lines).
#
#   scripts/check-deploy.sh [PATH_TO_ipfs-registry]   (default target/debug/ipfs-registry,
#                                                      built with `cargo build --locked` if missing)
#
# Installs deploy/validate's npm packages (pinned by its package-lock.json) when missing;
# quiet unless something fails. Environment: CHECK_DEPLOY_INSTALL_TIMEOUT (600 s).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="$ROOT/deploy/validate"
STAMP="$DIR/node_modules/.deploy-validate-installed"
LOG="$DIR/npm-install.log"
TIMEOUT="${CHECK_DEPLOY_INSTALL_TIMEOUT:-600}"
BIN="${1:-$ROOT/target/debug/ipfs-registry}"

die() { echo "check-deploy: $*" >&2; exit 1; }

installed() {
  [[ -f "$STAMP" && ! "$DIR/package.json" -nt "$STAMP" && ! "$DIR/package-lock.json" -nt "$STAMP" ]]
}

install() {
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    # shellcheck source=scripts/services.sh
    source "$ROOT/scripts/services.sh"
    apt_install nodejs npm || die "node and npm are required (apt-get install nodejs npm)"
  fi
  installed && return 0
  exec 7> "$DIR/.npm-install.lock"
  flock -w "$TIMEOUT" 7 || die "could not lock $DIR/.npm-install.lock"
  if ! installed; then
    # npm install, not npm ci: on some machines an optional dependency's tarball is
    # unreachable and npm ci fails on it; --no-save keeps the committed lock file as it is.
    if ! (cd "$DIR" && timeout "$TIMEOUT" npm install --no-save --no-audit --no-fund \
            --loglevel=error > "$LOG" 2>&1); then
      tail -n 30 "$LOG" >&2 || true
      die "npm install in deploy/validate failed (log: $LOG)"
    fi
    touch "$STAMP"
  fi
  exec 7>&-
}

install
if [[ ! -x "$BIN" ]]; then
  (cd "$ROOT" && cargo build --locked --quiet) || die "cargo build failed"
fi
status=0
node "$DIR/check.mjs" --binary "$BIN" || status=1
"$ROOT/scripts/check-image-context.sh" --controls || status=1
exit "$status"
