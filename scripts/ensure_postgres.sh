#!/usr/bin/env bash
# Make sure a PostgreSQL server answers on 127.0.0.1:5432 for the team-mode tests: install
# Debian's package when it is missing, start the packaged cluster when it is down, wait until it
# accepts connections. Idempotent, and quick when everything is up already.
set -euo pipefail

HOST=127.0.0.1
PORT=5432
WAIT_S=60

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

if pg_isready -q -h "$HOST" -p "$PORT" 2>/dev/null; then
  exit 0
fi

if ! command -v pg_ctlcluster >/dev/null || ! command -v psql >/dev/null; then
  echo "ensure_postgres: installing PostgreSQL (apt)" >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi

version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$version" ]; then
  echo "ensure_postgres: no cluster under /etc/postgresql" >&2
  exit 1
fi
conf=/etc/postgresql/$version/main
# The tests connect as `postgres` over TCP without a password (a throwaway local server);
# a fresh package install asks for one on 127.0.0.1, so trust loopback the first time only.
if ! grep -Eq '^host\s+all\s+all\s+127\.0\.0\.1/32\s+trust' "$conf/pg_hba.conf"; then
  echo "ensure_postgres: trusting 127.0.0.1 in $conf/pg_hba.conf" >&2
  as_root sed -i '1i host all all 127.0.0.1/32 trust' "$conf/pg_hba.conf"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main reload 2>/dev/null || true
fi

if ! pg_isready -q -h "$HOST" -p "$PORT" 2>/dev/null; then
  echo "ensure_postgres: starting cluster $version/main" >&2
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
fi

for _ in $(seq 1 $((WAIT_S * 4))); do
  if pg_isready -q -h "$HOST" -p "$PORT" 2>/dev/null; then
    exit 0
  fi
  sleep 0.25
done
echo "ensure_postgres: PostgreSQL is not answering on $HOST:$PORT after ${WAIT_S}s" >&2
exit 1
