# Sourced by scripts/test.sh and scripts/run.sh: makes sure the services the registry needs
# are running on this machine, installing them from Debian/npm when missing.
#
#   ensure_postgres   exports IPFS_REGISTRY_TEST_DATABASE_URL (an admin URL, trust auth, on a
#                     server that offers TLS)
#   ensure_ipfs_node  exports IPFS_REGISTRY_TEST_IPFS_URL (a Kubo-RPC-compatible node)

SERVICES_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PRIVATE_PG_PORT="${IPFS_REGISTRY_PG_PORT:-55432}"
PRIVATE_PG_DIR="${TMPDIR:-/tmp}/ipfs-registry-pg"

say() { echo "services: $*" >&2; }

apt_install() {
  if [ "$(id -u)" != 0 ]; then
    say "need root to apt-get install $*"
    return 1
  fi
  if [ -z "${APT_UPDATED:-}" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

pg_answers() {
  psql "$1" -Atqc 'select 1' >/dev/null 2>&1
}

# tests/tls.rs connects with sslmode=require, verify-ca and verify-full, so the test server
# must offer TLS. Debian's cluster does (ssl = on, the snakeoil certificate); where it is
# off, the server gets a certificate in its data directory (Debian's snakeoil one, else a
# self-signed one for localhost) and ssl = on, by ALTER SYSTEM and a reload.
pg_ensure_ssl() {
  local url="$1" dir owner
  [ "$(psql "$url" -Atqc 'show ssl' 2>/dev/null)" = on ] && return 0
  dir=$(psql "$url" -Atqc 'show data_directory') || return 1
  if [ ! -s "$dir/server.crt" ] || [ ! -s "$dir/server.key" ]; then
    local snakeoil_crt=/etc/ssl/certs/ssl-cert-snakeoil.pem
    local snakeoil_key=/etc/ssl/private/ssl-cert-snakeoil.key
    if [ -r "$snakeoil_crt" ] && [ -r "$snakeoil_key" ]; then
      cp "$snakeoil_crt" "$dir/server.crt" && cp "$snakeoil_key" "$dir/server.key" || return 1
    else
      command -v openssl >/dev/null || apt_install openssl || return 1
      openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj /CN=localhost \
        -addext subjectAltName=DNS:localhost \
        -keyout "$dir/server.key" -out "$dir/server.crt" >/dev/null 2>&1 || return 1
    fi
    owner=$(stat -c %U "$dir")
    [ "$(id -u)" = 0 ] && chown "$owner" "$dir/server.crt" "$dir/server.key"
    chmod 644 "$dir/server.crt"
    chmod 600 "$dir/server.key"
  fi
  psql "$url" -qc "ALTER SYSTEM SET ssl_cert_file = 'server.crt'" \
    -c "ALTER SYSTEM SET ssl_key_file = 'server.key'" -c "ALTER SYSTEM SET ssl = on" \
    -c "SELECT pg_reload_conf()" >/dev/null || return 1
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    [ "$(psql "$url" -Atqc 'show ssl' 2>/dev/null)" = on ] && return 0
    sleep 0.5
  done
  return 1
}

ensure_postgres() {
  if [ -n "${IPFS_REGISTRY_TEST_DATABASE_URL:-}" ]; then
    pg_answers "$IPFS_REGISTRY_TEST_DATABASE_URL" && return 0
    say "IPFS_REGISTRY_TEST_DATABASE_URL does not answer: $IPFS_REGISTRY_TEST_DATABASE_URL"
    return 1
  fi
  command -v psql >/dev/null || apt_install postgresql-client
  # The machine's own server, when it runs with trust auth on the standard port.
  local url="postgres://postgres@127.0.0.1:5432/postgres"
  if ! pg_answers "$url" && command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    local version
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    [ -n "$version" ] && pg_ctlcluster --skip-systemctl-redirect "$version" main start >/dev/null 2>&1 || true
  fi
  if pg_answers "$url"; then
    pg_ensure_ssl "$url" || say "PostgreSQL at $url does not offer TLS (see its log): tests/tls.rs will fail"
    export IPFS_REGISTRY_TEST_DATABASE_URL="$url"
    return 0
  fi
  # Otherwise a private throwaway cluster with trust auth on loopback.
  url="postgres://postgres@127.0.0.1:$PRIVATE_PG_PORT/postgres"
  if ! pg_answers "$url"; then
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || apt_install postgresql
    local bin
    bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
    local as=()
    [ "$(id -u)" = 0 ] && as=(runuser -u postgres --)
    if [ ! -f "$PRIVATE_PG_DIR/PG_VERSION" ]; then
      mkdir -p "$PRIVATE_PG_DIR"
      [ "$(id -u)" = 0 ] && chown postgres "$PRIVATE_PG_DIR"
      "${as[@]}" "$bin/initdb" -D "$PRIVATE_PG_DIR" -A trust -U postgres >/dev/null
    fi
    say "starting a private PostgreSQL on 127.0.0.1:$PRIVATE_PG_PORT"
    "${as[@]}" "$bin/pg_ctl" -D "$PRIVATE_PG_DIR" -l "$PRIVATE_PG_DIR/server.log" -w \
      -o "-p $PRIVATE_PG_PORT -k $PRIVATE_PG_DIR -c listen_addresses=127.0.0.1 -c max_connections=300" \
      start >/dev/null
  fi
  pg_answers "$url" || { say "PostgreSQL did not come up"; return 1; }
  pg_ensure_ssl "$url" || say "PostgreSQL at $url does not offer TLS (see $PRIVATE_PG_DIR/server.log): tests/tls.rs will fail"
  export IPFS_REGISTRY_TEST_DATABASE_URL="$url"
}

ensure_ipfs_node() {
  if [ -n "${IPFS_REGISTRY_TEST_IPFS_URL:-}" ]; then
    curl -sf -X POST --max-time 5 "$IPFS_REGISTRY_TEST_IPFS_URL/api/v0/id" >/dev/null && return 0
    say "IPFS_REGISTRY_TEST_IPFS_URL does not answer: $IPFS_REGISTRY_TEST_IPFS_URL"
    return 1
  fi
  command -v node >/dev/null || apt_install nodejs npm
  local url
  url=$("$SERVICES_ROOT/scripts/ipfs-node.sh" start | tail -n 1)
  export IPFS_REGISTRY_TEST_IPFS_URL="$url"
}

# Drops the databases earlier test runs created (tests/common: one per test, named
# ipfs_registry_test_*); each costs a few MB, and thousands accumulate on a machine that
# keeps its PostgreSQL. Databases still in use (a run in progress) are left alone.
drop_test_databases() {
  local admin="$1" name
  psql "$admin" -Atqc "SELECT datname FROM pg_database WHERE datname LIKE 'ipfs\_registry\_test\_%'" |
    while read -r name; do
      psql "$admin" -qc "DROP DATABASE IF EXISTS \"$name\"" >/dev/null 2>&1 || true
    done
}
