#!/usr/bin/env bash
# Installs and starts what Chatty needs on a Debian machine with Rust, using
# whatever is already there. `deps.sh run`: what `chatty up` needs to build.
# `deps.sh test`: also MariaDB, Redis, Chromium, Prometheus and the Python
# checkers that the test suite uses, and starts MariaDB and Redis.
# `deps.sh bench`: what `test` needs, plus what ops/bench compares against
# and measures with (nginx with nchan, wrk, perf, matplotlib, REDbot).
set -euo pipefail

mode=${1:-run}
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

apt_updated=0
apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ $apt_updated -eq 0 ]; then as_root apt-get update -qq; apt_updated=1; fi
  echo "deps: installing ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

apt_install cmake build-essential pkg-config
[ "$mode" = run ] && exit 0

apt_install mariadb-server redis-server chromium chromium-driver prometheus yamllint python3-pip openssl

# MariaDB: start it when nothing answers on 3306 (no systemd here).
if ! mariadb-admin --protocol=tcp -h127.0.0.1 -uroot ping >/dev/null 2>&1; then
  echo "deps: starting MariaDB"
  as_root mkdir -p /run/mysqld
  as_root chown mysql:mysql /run/mysqld 2>/dev/null || true
  as_root start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql
  for _ in $(seq 1 60); do
    mariadb-admin --protocol=tcp -h127.0.0.1 -uroot ping >/dev/null 2>&1 && break
    sleep 0.5
  done
fi
mariadb-admin --protocol=tcp -h127.0.0.1 -uroot ping >/dev/null 2>&1 \
  || { echo "deps: MariaDB does not answer on 127.0.0.1:3306" >&2; exit 1; }
# Root over TCP with an empty password, as the tests expect.
if ! mariadb --protocol=tcp -h127.0.0.1 -uroot -e 'select 1' >/dev/null 2>&1; then
  as_root mariadb -uroot -e "ALTER USER 'root'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD(''); FLUSH PRIVILEGES;"
fi

# Redis: start it when nothing answers on 6379.
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "deps: starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
  for _ in $(seq 1 40); do
    redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break
    sleep 0.25
  done
fi
redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null

# Python checkers (manifests; the API schema fuzzer).
py_has() { python3 -c "import $1" >/dev/null 2>&1; }
py_missing=()
py_has kubernetes_validate || py_missing+=(kubernetes-validate)
py_has schemathesis || py_missing+=(schemathesis)
if [ ${#py_missing[@]} -gt 0 ]; then
  echo "deps: pip installing ${py_missing[*]}"
  python3 -m pip install -q "${py_missing[@]}" 2>/dev/null \
    || python3 -m pip install -q --break-system-packages "${py_missing[@]}"
fi
# axe-core, the accessibility checker the browser tests run in the chat frame:
# tests/package.json pins it, tests/node_modules (git-ignored) holds it.
repo=$(cd "$(dirname "$0")/.." && pwd)
if [ ! -f "$repo/tests/node_modules/axe-core/axe.min.js" ]; then
  command -v npm >/dev/null 2>&1 || apt_install nodejs npm
  echo "deps: npm ci (axe-core) in tests/"
  (cd "$repo/tests" && npm ci --no-audit --no-fund --loglevel=error)
fi
if [ "$mode" = bench ]; then
  apt_install nginx-light libnginx-mod-nchan wrk linux-perf
  for mod in matplotlib redbot; do
    if ! py_has "$mod"; then
      echo "deps: pip installing $mod"
      python3 -m pip install -q "$mod" 2>/dev/null \
        || python3 -m pip install -q --break-system-packages "$mod"
    fi
  done
fi
echo "deps: ready"
