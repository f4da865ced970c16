#!/usr/bin/env bash
# Builds the registry from the image's exact build context, without Docker (CI cannot pull
# the base images): the files .dockerignore lets through, put where deploy/Dockerfile's COPY
# lines put them, nothing else, in a temporary directory; then the Dockerfile's own RUN
# steps there, with `cargo build --release --locked` run as
# `cargo check --locked --offline` (deploy/validate/image-context.mjs says exactly what
# is run and checked). A file the compile reads but the image lacks (a migrations
# directory, an include_str!) fails here as it would fail `docker build`.
#
#   scripts/check-image-context.sh [--controls] [--dockerfile FILE] [--dockerignore FILE] [--keep]
#
#   --controls      also check that two broken variants fail (scripts/check-deploy.sh uses it)
#   --dockerfile, --dockerignore
#                   check other versions of the two files against this work tree, e.g.
#                   --dockerignore <(git show HEAD~1:.dockerignore)
#   --keep          keep the temporary directory (the reconstructed context)
#
# cargo's output of the last run is in target/image-context/build.log.
#
# Why `cargo check` of the debug profile: the context's failure modes are files missing at
# compile time (modules, include_str!/include_bytes!, refinery's embed_migrations!, a
# build script's inputs), and `cargo check` runs all of them — macro expansion, build
# scripts, type checking — without code generation. A release build on 2 cores takes 5-8
# minutes cold; `check` of the same tree about a third of that, and on a warm cache (the
# dependencies are kept in target/image-context, separate from target/debug so it neither
# waits for nor disturbs the other builds) well under a minute, spent on the crate itself,
# which is rebuilt from the context every time. IMAGE_CONTEXT_CARGO=build runs `cargo
# build` (debug) instead, linking too.
#
# Environment: IMAGE_CONTEXT_TARGET_DIR (default target/image-context), IMAGE_CONTEXT_CARGO
# (check).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="${IMAGE_CONTEXT_TARGET_DIR:-$ROOT/target/image-context}"
mkdir -p "$target"
work="$(mktemp -d "${TMPDIR:-/tmp}/ipfs-registry-image-context.XXXXXX")"
keep=0
trap '[[ $keep == 1 ]] && echo "check-image-context: kept $work" >&2 || rm -rf "$work"' EXIT

args=()
while (($#)); do
  case "$1" in
    --controls) args+=(--controls) ;;
    --dockerfile|--dockerignore)
      [[ $# -ge 2 ]] || { echo "check-image-context: $1 needs a file" >&2; exit 2; }
      # Copied first: a <(...) pipe can be read only once, and the controls read it again.
      copy="$work/given${1#--}"; cat "$2" > "$copy"; args+=("$1" "$copy"); shift ;;
    --keep) keep=1 ;;
    *) echo "usage: $0 [--controls] [--dockerfile FILE] [--dockerignore FILE] [--keep]" >&2; exit 2 ;;
  esac
  shift
done

command -v node >/dev/null || { echo "check-image-context: node is required (apt-get install nodejs)" >&2; exit 1; }
command -v cargo >/dev/null || { echo "check-image-context: cargo is required" >&2; exit 1; }

# The crate itself is rebuilt from each run's new directory (its own artifacts, under a
# path-derived hash): drop the previous runs' so the cache holds only the dependencies.
rm -rf "$target"/debug/deps/*ipfs_registry-* "$target"/debug/.fingerprint/ipfs-registry-* \
  "$target"/debug/build/ipfs-registry-*

export CARGO_TARGET_DIR="$target" CARGO_INCREMENTAL=0
export IMAGE_CONTEXT_CARGO="${IMAGE_CONTEXT_CARGO:-check}"
# The log of the RUN steps (cargo's output) stays in the cache directory after the run.
node "$ROOT/deploy/validate/image-context.mjs" --root "$ROOT" --work "$work/build" \
  --log "$target/build.log" "${args[@]}"
