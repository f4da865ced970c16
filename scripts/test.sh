#!/usr/bin/env bash
# Runs the whole test suite on this machine, installing and starting what it needs:
# PostgreSQL, the IPFS node (js-ipfs from npm, pinned by tests/ipfs-node/package-lock.json)
# and the clients the tests drive (skopeo, docker, podman, containerd: the tests start their
# own dockerd and containerd); then runs the README's commands (scripts/readme-smoke.sh)
# and validates the deployment files (scripts/check-deploy.sh). Point
# IPFS_REGISTRY_TEST_IPFS_URL at a Kubo node or IPFS_REGISTRY_TEST_DATABASE_URL at another
# PostgreSQL to use those instead.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh

started=$(date +%s)
step() { echo "== $* ($(( $(date +%s) - started ))s)" >&2; }

step "tools"
scripts/ensure-tools.sh
command -v cargo >/dev/null || { echo "cargo is required (rustup.rs)" >&2; exit 1; }

step "PostgreSQL"
ensure_postgres
echo "PostgreSQL: $IPFS_REGISTRY_TEST_DATABASE_URL" >&2
drop_test_databases "$IPFS_REGISTRY_TEST_DATABASE_URL"
# ...and this run's own, and the test registries' data directories, however it ends.
test_dirs="${TMPDIR:-/tmp}/ipfs-registry-tests"
trap 'drop_test_databases "$IPFS_REGISTRY_TEST_DATABASE_URL"; rm -rf "$test_dirs"' EXIT

step "IPFS node"
ensure_ipfs_node
echo "IPFS node: $IPFS_REGISTRY_TEST_IPFS_URL" >&2

step "format and lints"
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings

step "tests"
cargo test --all-targets --locked -- --test-threads "${TEST_THREADS:-4}"

# The README's commands as a user types them: `cargo run`, the admin commands, scripts/run.sh.
step "README commands"
scripts/readme-smoke.sh

# After the tests: it runs the debug binary they built (its `config` subcommand).
step "deployment files (Akash SDL, compose)"
scripts/check-deploy.sh target/debug/ipfs-registry
step "done"
