#!/usr/bin/env bash
# Make sure every service the test suite talks to is up; start the ones that
# are not; fail loudly (exit 1) if one cannot be started. Never skip.
#   scripts/services.sh            check and start all
#   scripts/services.sh postgres   only the named ones
#   scripts/services.sh wrk        a tool the benchmarks need (installed from Debian's packages)
#   scripts/services.sh prometheus prometheus, promtool and amtool for the interop tests (the same)
#   scripts/services.sh haproxy nginx  the serving fleet's load balancers (the same; not started)
#   scripts/services.sh bubblewrap     the MCP gateway's sandbox (the same)
#   scripts/services.sh buildah        buildah, podman and a local base image (conveyor build's tests)
set -u

wait_for() {  # name, check command, seconds
  local name=$1 check=$2 limit=${3:-30} i
  for ((i = 0; i < limit * 2; i++)); do
    if eval "$check" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  return 1
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

ensure() {  # name, check command, start command
  local name=$1 check=$2 start=$3
  if eval "$check" >/dev/null 2>&1; then
    printf '  %-10s up\n' "$name"
    return 0
  fi
  printf '  %-10s down: starting it with: %s\n' "$name" "$start"
  if ! eval "$start" >/tmp/conveyor-start-"$name".log 2>&1; then
    echo "  $name: the start command failed:"; sed 's/^/    /' /tmp/conveyor-start-"$name".log | tail -20
  fi
  if wait_for "$name" "$check" 60; then
    printf '  %-10s started\n' "$name"
  else
    echo "ERROR: $name is not reachable and could not be started (see /tmp/conveyor-start-$name.log)." >&2
    failed+=("$name")
  fi
}

apt_install() {  # Debian packages, without starting any daemon they bring (prometheus on 9090)
  local policy=/usr/sbin/policy-rc.d made="" rc
  if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" ||
    { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"; }
  rc=$?
  if [ -n "$made" ]; then rm -f "$policy"; fi
  return $rc
}

# pgvector for PostgreSQL's major version (the RAG index's postgresql:// backend): Debian's
# postgresql-N-pgvector when the archive has it. Bookworm has none for PostgreSQL 15, so the
# upstream tarball of Debian's pgvector source package (from the first of trixie,
# bookworm-backports, sid that has one) is downloaded from Debian's archive, checked against
# the sha256 in that suite's Sources index, and built against postgresql-server-dev-N (a few
# seconds with gcc).
pg_major() { psql -h 127.0.0.1 -U postgres -d test -tAc 'show server_version_num' | cut -c1-2; }
pgvector_ready() {
  psql -h 127.0.0.1 -U postgres -d test -v ON_ERROR_STOP=1 -tAc 'create extension if not exists vector'
}
debian_source() {  # package -> prints "URL SHA256" of its upstream tarball in Debian's archive
  python3 - "$1" <<'PY'
import lzma, sys, urllib.request
package, mirror = sys.argv[1], "http://deb.debian.org/debian"
for suite in ("trixie", "bookworm-backports", "sid"):
    try:
        with urllib.request.urlopen(f"{mirror}/dists/{suite}/main/source/Sources.xz", timeout=60) as r:
            index = lzma.decompress(r.read()).decode()
    except OSError:
        continue
    for stanza in index.split("\n\n"):
        fields = dict(l.split(": ", 1) for l in stanza.splitlines() if ": " in l and not l.startswith(" "))
        if fields.get("Package") != package:
            continue
        sums = stanza.split("Checksums-Sha256:", 1)[1].splitlines()[1:]
        for line in sums:
            if not line.startswith(" "):
                break
            sha, _, name = line.split()
            if ".orig.tar." in name:
                print(f"{mirror}/{fields['Directory']}/{name} {sha}")
                sys.exit(0)
sys.exit(f"no source package {package} in Debian's archive")
PY
}
install_pgvector() {
  local v url sha build rc
  v=$(pg_major) || return 1
  if apt-cache show "postgresql-$v-pgvector" >/dev/null 2>&1 ||
    { apt-get update >/dev/null && apt-cache show "postgresql-$v-pgvector" >/dev/null 2>&1; }; then
    apt_install "postgresql-$v-pgvector"
    return
  fi
  command -v pg_config >/dev/null && dpkg -s "postgresql-server-dev-$v" >/dev/null 2>&1 ||
    apt_install "postgresql-server-dev-$v" make gcc || return 1
  read -r url sha < <(debian_source pgvector) || return 1
  build=$(mktemp -d)
  curl -fsSL --max-time 120 -o "$build/src.tar" "$url" &&
    echo "$sha  $build/src.tar" | sha256sum -c --quiet &&
    tar -xf "$build/src.tar" -C "$build" --strip-components=1 &&
    make -C "$build" PG_CONFIG="/usr/lib/postgresql/$v/bin/pg_config" &&
    make -C "$build" PG_CONFIG="/usr/lib/postgresql/$v/bin/pg_config" install
  rc=$?
  rm -rf "$build"
  return $rc
}

# buildah and podman: tests/deploy/test_image.py builds the Dockerfile `conveyor build` writes
# with Debian's buildah (vfs storage, chroot isolation: no daemon) and runs the image with
# podman (runc). No image registry is reachable, so the base image is a Debian bookworm root
# filesystem made here with debootstrap (Python 3.11 and venv; this machine's CA bundle, so a
# TLS-inspecting proxy in front of PyPI is trusted, and PIP_CERT naming it), imported as
# $TEST_BASE_IMAGE, the stand-in for python:3.11-slim-bookworm.
TEST_BASE_IMAGE=localhost/conveyor-test/python:3.11-slim-bookworm
buildah_ready() {
  command -v buildah && command -v podman && command -v runc &&
    buildah --storage-driver vfs inspect --type image "$TEST_BASE_IMAGE"
}
install_buildah() {
  local root ctr rc
  apt_install buildah podman runc debootstrap || return 1
  root=$(mktemp -d)
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm \
    "$root/fs" http://deb.debian.org/debian &&
    chroot "$root/fs" sh -c 'apt-get clean && rm -rf /var/lib/apt/lists/* &&
      ln -sf /usr/bin/python3 /usr/local/bin/python && ln -sf /usr/bin/python3 /usr/local/bin/python3' &&
    cp /etc/ssl/certs/ca-certificates.crt "$root/fs/etc/ssl/certs/ca-certificates.crt" &&
    tar -C "$root/fs" -cf "$root/fs.tar" . &&
    ctr=$(buildah --storage-driver vfs from scratch) &&
    buildah --storage-driver vfs add "$ctr" "$root/fs.tar" / &&
    buildah --storage-driver vfs config --cmd python3 \
      --env PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin \
      --env LANG=C.UTF-8 --env PIP_CERT=/etc/ssl/certs/ca-certificates.crt "$ctr" &&
    buildah --storage-driver vfs commit -q --rm "$ctr" "$TEST_BASE_IMAGE"
  rc=$?
  rm -rf "$root"
  return $rc
}

failed=()
wanted=${*:-postgres redis nats mariadb prometheus chromium}
echo "Checking services: $wanted"
for svc in $wanted; do
  case $svc in
    postgres) ensure postgres "pg_isready -q -h 127.0.0.1 -p 5432 && psql -h 127.0.0.1 -U postgres -d test -tAc 'select 1'" \
                "pg_ctlcluster --skip-systemctl-redirect \$(ls /etc/postgresql | head -1) main start"
              # CREATE EXTENSION vector in database test (the RAG index's pgvector tests).
              ensure pgvector pgvector_ready install_pgvector ;;
    redis)    ensure redis "redis-cli -h 127.0.0.1 -p 6379 ping | grep -q PONG" \
                "redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save '' --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log" ;;
    nats)     ensure nats "port_open 4222" \
                "start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log" ;;
    rabbitmq) ensure rabbitmq "port_open 5672" "rabbitmq-server -detached" ;;
    mariadb)  ensure mariadb "port_open 3306" \
                "start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd" ;;
    wrk)      ensure wrk "command -v wrk" \
                "apt-get install -y wrk || (apt-get update && apt-get install -y wrk)" ;;
    # The binaries only: the interop tests start their own prometheus on a free port.
    prometheus) ensure prometheus "command -v prometheus && command -v promtool && command -v amtool" \
                "apt_install prometheus prometheus-alertmanager" ;;
    # The serving fleet's load balancers (binaries only: `conveyor fleet up` and the fleet
    # tests start their own on free ports, with configs `conveyor fleet config` writes).
    haproxy)  ensure haproxy "command -v haproxy" "apt_install haproxy" ;;
    nginx)    ensure nginx "command -v nginx" "apt_install nginx" ;;
    # Debian's chromium: the dashboard's browser tests drive it headless (Playwright, no download).
    chromium) ensure chromium "test -x /usr/bin/chromium" "apt_install chromium" ;;
    # bubblewrap: the MCP gateway's sandbox for local tool servers (network and filesystem).
    bubblewrap) ensure bubblewrap "command -v bwrap" "apt_install bubblewrap" ;;
    # buildah and podman with a local base image: the image tests (see install_buildah).
    buildah)  ensure buildah buildah_ready install_buildah ;;
    # GitHub's own workflow parser (npm @actions/workflow-parser, pinned by its lock file):
    # the CI templates' tests run it on the generated workflow.
    workflow-parser) ensure workflow-parser \
                "test -d tests/deploy/workflow_parser/node_modules/@actions/workflow-parser" \
                "(cd tests/deploy/workflow_parser && npm ci --no-audit --no-fund)" ;;
    *) echo "unknown service $svc" >&2; exit 2 ;;
  esac
done
if ((${#failed[@]})); then
  echo "ERROR: services down: ${failed[*]}. The tests need them; they are never skipped." >&2
  exit 1
fi
