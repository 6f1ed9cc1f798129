#!/usr/bin/env bash
# A second Docker engine that cannot see the client's tmpfs, as on Docker Desktop, Colima or a
# remote host: dockerd in its own mount namespace with fresh, empty tmpfs on /dev/shm and
# /run/user. The engine-mode tests run against it (DEVSECRETS_ISOLATED_DOCKER_HOST).
# Usage: bash .ci/dockerd-isolated.sh start|stop. Prints the DOCKER_HOST on start. Loads the
# FROM-scratch test image from the first engine (DOCKER_HOST) into it. Loopback only.
set -euo pipefail
state=${DEVSECRETS_ISOLATED_STATE:-/tmp/devsecrets-dockerd-isolated}
sock="$state/docker.sock"

start() {
  mkdir -p "$state"
  if ! DOCKER_HOST="unix://$sock" docker info >/dev/null 2>&1; then
    # shellcheck disable=SC2016
    unshare --mount --propagation private sh -c '
      mount -t tmpfs tmpfs /dev/shm
      mkdir -p /run/user && mount -t tmpfs tmpfs /run/user
      exec dockerd --host "unix://$1/docker.sock" --data-root "$1/data" --exec-root "$1/exec" \
        --pidfile "$1/dockerd.pid" --bridge=none --iptables=false --ip-forward=false --ip-masq=false
    ' sh "$state" >"$state/dockerd.log" 2>&1 &
    for _ in $(seq 1 60); do
      DOCKER_HOST="unix://$sock" docker info >/dev/null 2>&1 && break
      sleep 0.5
    done
  fi
  DOCKER_HOST="unix://$sock" docker info >/dev/null || { tail -20 "$state/dockerd.log" >&2; return 1; }
  if ! DOCKER_HOST="unix://$sock" docker image inspect devsecrets-test-busybox >/dev/null 2>&1; then
    docker save devsecrets-test-busybox | DOCKER_HOST="unix://$sock" docker load -q >/dev/null
  fi
  echo "unix://$sock"
}

stop() {
  if [ -f "$state/dockerd.pid" ]; then
    kill "$(cat "$state/dockerd.pid")" 2>/dev/null || true
    for _ in $(seq 1 40); do [ -f "$state/dockerd.pid" ] || break; sleep 0.25; done
  fi
}

"${1:-start}"
