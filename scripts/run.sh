#!/usr/bin/env bash
# Runs the registry on http://127.0.0.1:5000 with PostgreSQL and an IPFS node on this
# machine, starting (and if needed installing) both first. Extra arguments go to `serve`.
# A release build; RUN_PROFILE=dev builds the debug profile instead (what CI runs, in
# scripts/readme-smoke.sh, to spare minutes of optimising).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh
ensure_postgres
ensure_ipfs_node
if [ -z "${IPFS_REGISTRY_DATABASE__URL:-}" ]; then
  # A database of its own beside the test databases on the same server.
  admin="$IPFS_REGISTRY_TEST_DATABASE_URL"
  psql "$admin" -Atqc "select 1 from pg_database where datname = 'ipfs_registry'" | grep -q 1 ||
    psql "$admin" -qc "create database ipfs_registry" >/dev/null
  export IPFS_REGISTRY_DATABASE__URL="${admin%/*}/ipfs_registry"
fi
export IPFS_REGISTRY_IPFS__URL="${IPFS_REGISTRY_IPFS__URL:-$IPFS_REGISTRY_TEST_IPFS_URL}"
exec cargo run --profile "${RUN_PROFILE:-release}" --locked -- serve "$@"
