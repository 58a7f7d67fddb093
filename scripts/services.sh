#!/usr/bin/env bash
# Make sure the local PostgreSQL, Redis and RabbitMQ (with its management plugin) are up.
# Starts a stopped one when we are allowed to (root on a Debian-style machine); fails
# loudly, naming the service, when one cannot be reached within a minute.
set -uo pipefail

PGHOST=${PGHOST:-127.0.0.1}
wait_for() {  # name, probe command
  local name=$1; shift
  for _ in $(seq 1 60); do
    if "$@" >/dev/null 2>&1; then echo "services: $name is up"; return 0; fi
    sleep 1
  done
  echo "services: $name did not come up within 60 s" >&2
  return 1
}

pg_up() { pg_isready -h "$PGHOST" -p 5432 -q; }
redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping | grep -q PONG; }
rabbit_up() { python3 - <<'PY'
import socket; socket.create_connection(("127.0.0.1", 5672), timeout=2).close()
PY
}
mgmt_up() { curl -fsS -u guest:guest http://127.0.0.1:15672/api/overview; }

if ! pg_up && command -v pg_ctlcluster >/dev/null; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
fi
if ! redis_up && command -v redis-server >/dev/null; then
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
fi
if ! rabbit_up && command -v rabbitmq-server >/dev/null; then
  rabbitmq-server -detached || true
fi
wait_for PostgreSQL pg_up || exit 1
wait_for Redis redis_up || exit 1
wait_for RabbitMQ rabbit_up || exit 1
if ! mgmt_up >/dev/null 2>&1 && command -v rabbitmq-plugins >/dev/null; then
  rabbitmq-plugins enable rabbitmq_management >/dev/null || true
fi
wait_for "RabbitMQ management API" mgmt_up || exit 1
