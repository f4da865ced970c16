#!/bin/sh
# Kubo configuration for the node behind ipfs-registry, used by both stacks: docker compose
# mounts this file into /container-init.d/, and the Akash SDL carries it base64-encoded in
# KUBO_INIT_SCRIPT (akash/render.sh). The ipfs/kubo image runs /container-init.d/*.sh on
# every start, after `ipfs init` (which applies IPFS_PROFILE=server to a new repo) and
# before the daemon, so every setting here is written each time: the script is idempotent
# and an existing repo picks up changes on its next restart.
#
# Works with Kubo 0.35 and later (both stacks run 0.39): settings that only some versions
# know are set by version, because `ipfs config` refuses a key the running Kubo does not
# have, and a failing init script stops the container. deploy/validate/check.mjs runs this
# script against a stand-in `ipfs` for 0.35, 0.37, 0.38 and 0.39.
#
# Environment (all optional):
#   KUBO_STORAGE_MAX      Datastore.StorageMax, e.g. 90GB (default 90GB; keep it below the volume)
#   KUBO_SWARM_MAX_MEMORY Swarm.ResourceMgr.MaxMemory, what libp2p may use (default 1GiB);
#                         keep it below GOMEMLIMIT, which bounds the whole process and must
#                         sit below the container's memory limit (both stacks set all three)
#   KUBO_APPEND_ANNOUNCE  comma-separated multiaddrs to announce besides the container's own,
#                         e.g. /dns4/provider.example.com/tcp/31401 on Akash
set -eu

cfg() { ipfs config "$@" >/dev/null; }

# "0.39.0", "0.40.0-rc1": major and minor.
version=$(ipfs version --number)
major=${version%%.*}
minor=${version#*.}
minor=${minor%%[!0-9]*}
case "$major:$minor" in
  *[!0-9:]* | :* | *:) echo "010-ipfs-registry: cannot read Kubo's version from '$version'" >&2; exit 1 ;;
esac
at_least() { [ "$major" -gt "$1" ] || { [ "$major" -eq "$1" ] && [ "$minor" -ge "$2" ]; }; }
if ! at_least 0 35; then
  echo "010-ipfs-registry: Kubo $version is older than 0.35, the oldest this script supports" >&2
  exit 1
fi

# Server profile for repos created before IPFS_PROFILE was set (no-op otherwise): no mDNS,
# no NAT port mapping, no dialing or announcing of private address ranges.
ipfs config profile apply server >/dev/null

# RPC API on all interfaces of the container. It has no authentication: each stack keeps
# port 5001 on its internal network only (compose does not publish it; the SDL exposes it
# to the registry service alone).
cfg Addresses.API /ip4/0.0.0.0/tcp/5001
# Public read-only gateway. NoFetch: serve only blocks this node holds (the registry's
# layers), so the node is not an open gateway for the whole IPFS network.
cfg Addresses.Gateway /ip4/0.0.0.0/tcp/8080
cfg --json Gateway.NoFetch true

# The import profile the registry records with each blob (import_profile.chunk_size):
# CIDv1, raw leaves, fixed 256 KiB chunks, sha2-256. The registry passes these explicitly
# on every add; they are also Kubo's defaults here so that `ipfs add` by an operator yields
# the same CIDs as the registry.
cfg --json Import.CidVersion 1
cfg --json Import.UnixFSRawLeaves true
cfg Import.UnixFSChunker size-262144
cfg Import.HashFunction sha2-256
# At most 174 links per file node (the unixfs-v1-2025 profile would set 1024; 0.35+).
cfg --json Import.UnixFSFileMaxLinks 174

# Announce every block of every recursive pin (the registry pins each layer), and nothing
# the gateway merely cached. Kubo 0.38 merged Reprovider.* into Provide.* (and migrates an
# existing Reprovider.Strategy); before it, Provide.Strategy does not exist.
if at_least 0 38; then
  cfg Provide.Strategy pinned
else
  cfg Reprovider.Strategy pinned
fi

# Listen for other IPFS nodes on TCP 4001 only. Kubo's defaults also listen on UDP 4001
# (QUIC, WebTransport, WebRTC): Akash forwards each exposed port to a random external one,
# per protocol, so every UDP address would need its own forwarded port looked up and
# announced, and until then Kubo would announce addresses nobody can reach. One TCP port is
# enough for other nodes to fetch the layers; Kubo still dials out over QUIC.
cfg --json Addresses.Swarm '["/ip4/0.0.0.0/tcp/4001","/ip6/::/tcp/4001"]'

# Memory: libp2p's resource manager sizes its limits from MaxMemory, by default half the
# memory of the machine, which in a container is the host's. Pin it below GOMEMLIMIT.
cfg Swarm.ResourceMgr.MaxMemory "${KUBO_SWARM_MAX_MEMORY:-1GiB}"

# Durability: the registry answers a push only after the node's `add` returned, so what
# `add` stored must be on disk by then. Kubo's default datastore keeps pins in LevelDB,
# which syncs every write, but writes blocks to flatfs with "sync": false (the default since
# Kubo 0.33), so blocks acknowledged seconds before a power cut can be lost. Turn flatfs
# sync on. Kubo checks only type, path and shard function against the repo on disk, so
# this is allowed on an existing repo; a repo with another datastore layout (pebbleds,
# badgerds, flatfs-measure) is left alone with a warning: see deploy/README.md.
spec=$(ipfs config Datastore.Spec | tr -d ' \n')
case "$spec" in
  *'"type":"measure"'*)
    echo "010-ipfs-registry: WARNING: Datastore.Spec wraps its stores in measure; set \"sync\": true on its flatfs child yourself" >&2
    ;;
  *'"path":"blocks"'*'"shardFunc":"/repo/flatfs/shard/v1/next-to-last/2"'*'"type":"flatfs"'*'"path":"datastore"'*'"type":"levelds"'*)
    cfg --json Datastore.Spec '{"type":"mount","mounts":[{"mountpoint":"/blocks","type":"flatfs","prefix":"flatfs.datastore","path":"blocks","sync":true,"shardFunc":"/repo/flatfs/shard/v1/next-to-last/2"},{"mountpoint":"/","type":"levelds","prefix":"leveldb.datastore","path":"datastore","compression":"none"}]}'
    ;;
  *)
    echo "010-ipfs-registry: WARNING: Datastore.Spec is not Kubo's default flatfs + levelds layout; make sure its block store syncs writes (flatfs \"sync\": true; pebbleds with its WAL on)" >&2
    ;;
esac

# Repository GC: never automatic. Kubo's automatic GC (daemon --enable-gc) runs a full
# repo GC every GCPeriod while the repo is above StorageGCWatermark % of StorageMax. The
# registry pins everything it references, so once the pinned layers alone pass the
# watermark every run frees nothing, yet holds the lock `add` and `pin` wait for while it
# walks the whole repo (minutes for tens of GB): pushes stall and get 503, every period.
# So neither stack passes --enable-gc, and GCPeriod 0 turns the periodic GC off should the
# flag come back. Unpinned blocks (deleted images, abandoned uploads) are freed by an
# operator's `ipfs repo gc` at a quiet time (docs/operations.md, Kubo's repository GC).
# StorageMax is what `ipfs repo stat` reports as the repo's budget.
cfg Datastore.StorageMax "${KUBO_STORAGE_MAX:-90GB}"
cfg --json Datastore.StorageGCWatermark 90
cfg Datastore.GCPeriod 0s

if [ -n "${KUBO_APPEND_ANNOUNCE:-}" ]; then
  json=$(printf '%s' "$KUBO_APPEND_ANNOUNCE" | tr -d ' ' | sed 's/,/","/g')
  cfg --json Addresses.AppendAnnounce "[\"$json\"]"
else
  cfg --json Addresses.AppendAnnounce '[]'
fi

echo "010-ipfs-registry: Kubo configured for ipfs-registry"
