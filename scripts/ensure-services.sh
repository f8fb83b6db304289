#!/usr/bin/env bash
# Make sure PostgreSQL and RabbitMQ answer on 127.0.0.1 and RabbitMQ has the plugins obsflow uses.
# Starts them when installed but stopped; on a fresh Debian/Ubuntu machine, as root, installs them first.
set -euo pipefail

log() { printf 'ensure-services: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

apt_install() {
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null \
    || die "$1 is not installed. Install it (Debian/Ubuntu: apt-get install $1) or point OBSFLOW_DATABASE_URL / OBSFLOW_AMQP_URL at running servers."
  log "installing $1 from the distribution's packages"
  if [ -z "${APT_UPDATED:-}" ]; then apt-get update -q >/dev/null; APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$1" >/dev/null
}

wait_until() {  # wait_until SECONDS COMMAND...
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.5
  done
}

ensure_postgres() {
  if pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then ensure_databases; return; fi
  local fresh=""
  if ! command -v pg_ctlcluster >/dev/null; then apt_install postgresql; fresh=1; fi
  local version; version=$(ls /etc/postgresql | sort -V | tail -n 1)
  if [ -n "$fresh" ]; then
    # A fresh install: let local connections to 127.0.0.1 in without a password, as on the project's machines.
    local hba="/etc/postgresql/$version/main/pg_hba.conf"
    sed -i -E 's/^(host\s+all\s+all\s+127\.0\.0\.1\/32\s+)\S+/\1trust/' "$hba"
  fi
  log "starting PostgreSQL $version"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  # apt may have started it already, before the pg_hba.conf edit: make it read the file again.
  pg_ctlcluster --skip-systemctl-redirect "$version" main reload || true
  wait_until 60 pg_isready -h 127.0.0.1 -p 5432 -q || die "PostgreSQL did not come up on 127.0.0.1:5432"
  ensure_databases
}

ensure_databases() {  # the tests use the database `test`
  psql -h 127.0.0.1 -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='test'" | grep -q 1 \
    || psql -h 127.0.0.1 -U postgres -d postgres -qc "CREATE DATABASE test" \
    || die "cannot create the database 'test' as user postgres on 127.0.0.1 (trust authentication expected)"
}

ensure_rabbitmq() {
  if ! command -v rabbitmqctl >/dev/null; then apt_install rabbitmq-server; fi
  if ! rabbitmqctl -q status >/dev/null 2>&1; then
    log "starting RabbitMQ"
    rabbitmq-server -detached || true
  fi
  wait_until 120 rabbitmqctl -q await_startup || die "RabbitMQ did not start (see /var/log/rabbitmq)"
  local enabled; enabled=$(rabbitmq-plugins list -e -m 2>/dev/null || true)
  local wanted=(rabbitmq_shovel rabbitmq_federation rabbitmq_prometheus rabbitmq_stream)
  for plugin in "${wanted[@]}"; do
    if ! grep -qx "$plugin" <<<"$enabled"; then
      log "enabling RabbitMQ plugins: ${wanted[*]}"
      rabbitmq-plugins enable -q "${wanted[@]}" >/dev/null
      break
    fi
  done
  plugins_on_loopback
}

# The plugins' listeners (Prometheus 15692, stream protocol 5552) bind every interface by default: keep them on
# loopback. The config file covers the next boot; the running node's listeners are restarted on loopback now.
plugins_on_loopback() {
  local conf=/etc/rabbitmq/rabbitmq.conf
  if [ -w "$(dirname "$conf")" ] && ! grep -q '^prometheus.tcp.ip' "$conf" 2>/dev/null; then
    log "binding RabbitMQ's plugin listeners to 127.0.0.1 in $conf"
    printf '# obsflow: the plugins it enables listen on loopback only (scripts/ensure-services.sh)\n%s\n%s\n' \
      'prometheus.tcp.ip = 127.0.0.1' 'stream.listeners.tcp.1 = 127.0.0.1:5552' >>"$conf"
  fi
  if listening_beyond_loopback 15692; then
    log "restarting RabbitMQ's Prometheus listener on 127.0.0.1:15692"
    rabbitmqctl -q eval 'application:stop(rabbitmq_prometheus), application:set_env(rabbitmq_prometheus,
      tcp_config, [{ip, "127.0.0.1"}, {port, 15692}]), application:start(rabbitmq_prometheus).' >/dev/null
  fi
  if listening_beyond_loopback 5552; then
    log "restarting RabbitMQ's stream listener on 127.0.0.1:5552"
    rabbitmqctl -q eval 'application:stop(rabbitmq_stream), application:set_env(rabbitmq_stream,
      tcp_listeners, [{"127.0.0.1", 5552}]), application:start(rabbitmq_stream).' >/dev/null
  fi
}

listening_beyond_loopback() {  # listening_beyond_loopback PORT: true if something listens on PORT off loopback
  command -v ss >/dev/null || return 1
  ss -Hltn "sport = :$1" | awk '{print $4}' | grep -qvE '^(127\.0\.0\.1|\[::1\]):'
}

if [ -n "${OBSFLOW_TEST_DATABASE_URL:-}" ] && [ -n "${OBSFLOW_TEST_AMQP_URL:-}" ]; then
  log "using the servers OBSFLOW_TEST_DATABASE_URL and OBSFLOW_TEST_AMQP_URL name; nothing to start here"
  exit 0
fi
ensure_postgres
ensure_rabbitmq
log "PostgreSQL and RabbitMQ are up on 127.0.0.1"
