#!/usr/bin/env bash
# Fills in akash/deploy.yaml's ${...} placeholders and writes the SDL you deploy
# (default akash/deploy.rendered.yaml, git-ignored, mode 600: it holds secrets).
# An SDL has no variables and no secret store, so secrets are put in here, on your machine,
# and never committed. Refuses to write anything when a value is missing or unsafe.
#
#   POSTGRES_PASSWORD=... REGISTRY_SIGNING_KEY_FILE=signing-key.pem \
#   REGISTRY_HOST=registry.example.com GATEWAY_HOST=ipfs.example.com \
#   REGISTRY_IMAGE=ghcr.io/you/ipfs-registry:0.1.0 akash/render.sh [OUT]
#
# Required:
#   POSTGRES_PASSWORD           database password; letters, digits and ._~- only (it goes
#                               into a URL), at least 16 characters: `openssl rand -hex 24`
#   REGISTRY_SIGNING_KEY_FILE   PEM file with the token signing key (ES256), or the PEM text
#   or REGISTRY_SIGNING_KEY     itself in REGISTRY_SIGNING_KEY
#   REGISTRY_HOST               host name clients use for the registry (the `accept` host)
#   GATEWAY_HOST                host name of the public IPFS gateway (the `accept` host)
#   REGISTRY_IMAGE              the registry image you pushed (deploy/Dockerfile), with a
#                               version tag or a digest: registry/name:0.1.0 or
#                               registry/name@sha256:<hex> (no :latest, no bare name)
# Optional:
#   KUBO_APPEND_ANNOUNCE        extra swarm addresses for Kubo to announce (see README)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
template="$here/deploy.yaml"
init_script="$here/../deploy/kubo/010-ipfs-registry.sh"
out="${1:-$here/deploy.rendered.yaml}"

die() { echo "render: $*" >&2; exit 1; }

require() {
  [[ -n "${!1:-}" ]] || die "$1 is not set (see the top of $0)"
}

# Each value is checked against what may appear unquoted in the YAML (and in a URL).
check() {
  local name="$1" pattern="$2" what="$3"
  [[ "${!name}" =~ $pattern ]] || die "$name must be $what"
}

if [[ -z "${REGISTRY_SIGNING_KEY:-}" && -n "${REGISTRY_SIGNING_KEY_FILE:-}" ]]; then
  [[ -r "$REGISTRY_SIGNING_KEY_FILE" ]] || die "cannot read REGISTRY_SIGNING_KEY_FILE=$REGISTRY_SIGNING_KEY_FILE"
  REGISTRY_SIGNING_KEY="$(cat "$REGISTRY_SIGNING_KEY_FILE")"
fi
for name in POSTGRES_PASSWORD REGISTRY_SIGNING_KEY REGISTRY_HOST GATEWAY_HOST REGISTRY_IMAGE; do
  require "$name"
done
KUBO_APPEND_ANNOUNCE="${KUBO_APPEND_ANNOUNCE:-}"

check POSTGRES_PASSWORD '^[A-Za-z0-9._~-]{16,}$' "at least 16 of A-Z a-z 0-9 . _ ~ - (try: openssl rand -hex 24)"
check REGISTRY_HOST '^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$' "a lower-case DNS name"
check GATEWAY_HOST '^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$' "a lower-case DNS name"
check REGISTRY_IMAGE '^[A-Za-z0-9._/:@-]+$' "an image reference (registry/name:tag)"
# One build, named for good: providers pull an image once and keep it, so a moving tag
# (latest, or none, which means latest) would leave replicas on different builds and make a
# re-deploy of a new push a no-op. A digest pins it; so does a version tag you never move.
image_name="${REGISTRY_IMAGE%%@*}"
tag=""
if [[ "${image_name##*/}" == *:* ]]; then
  tag="${image_name##*:}"
  image_name="${image_name%:*}"
  [[ "$tag" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || die "REGISTRY_IMAGE=$REGISTRY_IMAGE: '$tag' is not a valid tag"
fi
if [[ "$REGISTRY_IMAGE" == *@* ]]; then
  [[ "${REGISTRY_IMAGE#*@}" =~ ^sha256:[0-9a-f]{64}$ ]] ||
    die "REGISTRY_IMAGE=$REGISTRY_IMAGE: the digest must be sha256: and 64 hex digits (docker buildx imagetools inspect shows it)"
else
  [[ -n "$tag" ]] ||
    die "REGISTRY_IMAGE=$REGISTRY_IMAGE has no tag or digest: name the build you pushed, e.g. $image_name:0.1.0 or $image_name@sha256:<digest>"
  [[ "$tag" != latest ]] ||
    die "REGISTRY_IMAGE=$REGISTRY_IMAGE: ':latest' moves with every push; use a version tag (e.g. :0.1.0) or a digest (@sha256:...)"
fi
[[ "$image_name" =~ ^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]+)?(/[a-z0-9]+([._-]+[a-z0-9]+)*)+$|^[a-z0-9]+([._-]+[a-z0-9]+)*$ ]] ||
  die "REGISTRY_IMAGE=$REGISTRY_IMAGE: '$image_name' is not a repository name (lower case, registry/path/name)"
check KUBO_APPEND_ANNOUNCE '^[A-Za-z0-9./,:-]*$' "comma-separated multiaddrs"
pem_re=$'^-----BEGIN [A-Z ]*PRIVATE KEY-----\n[A-Za-z0-9+/=\n]+-----END [A-Z ]*PRIVATE KEY-----\n?$'
check REGISTRY_SIGNING_KEY "$pem_re" "a PEM private key (-----BEGIN ... PRIVATE KEY-----)"

# The PEM travels inside a double-quoted YAML string: its newlines become \n escapes.
signing_key="${REGISTRY_SIGNING_KEY%$'\n'}"$'\n'
signing_key="${signing_key//$'\n'/\\n}"
kubo_init="$(base64 < "$init_script" | tr -d '\n')"

text="$(cat "$template")"
# Replaces the literal placeholder ${NAME} (quoted: no glob, no & in bash 5.2 replacements).
fill() { text="${text//"\${$1}"/"$2"}"; }
fill POSTGRES_PASSWORD "$POSTGRES_PASSWORD"
fill REGISTRY_SIGNING_KEY "$signing_key"
fill REGISTRY_HOST "$REGISTRY_HOST"
fill GATEWAY_HOST "$GATEWAY_HOST"
fill REGISTRY_IMAGE "$REGISTRY_IMAGE"
fill KUBO_INIT_SCRIPT "$kubo_init"
fill KUBO_APPEND_ANNOUNCE "$KUBO_APPEND_ANNOUNCE"

if left="$(grep -o '[$][{][A-Za-z_]*[}]' <<< "$text")"; then
  die "placeholders left unfilled: $(sort -u <<< "$left" | tr '\n' ' ')"
fi

umask 077
printf '%s\n' "$text" > "$out.tmp"
mv "$out.tmp" "$out"
echo "render: wrote $out (contains secrets: do not commit or share it)" >&2
