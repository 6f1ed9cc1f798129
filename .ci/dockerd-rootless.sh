#!/usr/bin/env bash
# A real rootless Docker engine, run by a throwaway non-root user, for the rootless tests
# (tests/test_engine_rootless.py reads DEVSECRETS_ROOTLESS_DOCKER_HOST).
# Debian's dockerd-rootless.sh (docker.io) runs dockerd inside rootlesskit's user and mount
# namespaces (/etc and /run copied up); the user's subuid/subgid range maps the container uids.
# Network: rootlesskit's `host` driver (no new network namespace, nothing downloaded, no
# slirp4netns), so dockerd gets --bridge=none and containers use network_mode none or host.
# $XDG_RUNTIME_DIR is /run/user/<uid> on a fresh tmpfs, as logind makes it on a desktop.
# Its own socket, data root and exec root live in the state dir.
# Usage: bash .ci/dockerd-rootless.sh start|stop. Needs root, rootlesskit and uidmap
# (newuidmap). Start prints the DOCKER_HOST and loads the FROM-scratch test image from the
# first engine (DOCKER_HOST) into it. Stop ends the engine and unmounts what start mounted;
# the user (dsrl<hash of the state dir>, or DEVSECRETS_ROOTLESS_USER) stays: start reuses it.
# Loopback only.
set -euo pipefail
state=${DEVSECRETS_ROOTLESS_STATE:-/tmp/devsecrets-dockerd-rootless}
# one user per state dir, so two such engines never share a user or its /run/user/<uid>
user=${DEVSECRETS_ROOTLESS_USER:-dsrl$(printf %s "$state" | sha256sum | cut -c1-8)}
sock="$state/docker.sock"
script=/usr/share/docker.io/contrib/dockerd-rootless.sh

answers() { DOCKER_HOST="unix://$sock" docker info >/dev/null 2>&1; }

start() {
  for tool in rootlesskit newuidmap newgidmap; do
    command -v "$tool" >/dev/null || { echo "dockerd-rootless: no $tool (apt-get install rootlesskit uidmap)" >&2; return 1; }
  done
  [ -x "$script" ] || { echo "dockerd-rootless: no $script (docker.io)" >&2; return 1; }
  id -u "$user" >/dev/null 2>&1 || useradd -M -U -d /nonexistent -s /usr/sbin/nologin "$user"
  # 65536 ids for the containers (useradd gives them where login.defs says so; else the
  # range after the last one given)
  for kind in uid gid; do
    file=/etc/sub$kind
    if ! grep -q "^$user:" "$file" 2>/dev/null; then
      first=$(awk -F: 'BEGIN { m = 100000 } $2 + $3 > m { m = $2 + $3 } END { print m }' "$file" 2>/dev/null || echo 100000)
      usermod "--add-sub${kind}s" "$first-$((first + 65535))" "$user"
    fi
  done
  uid=$(id -u "$user")
  gid=$(id -g "$user")
  xdg="/run/user/$uid"
  mkdir -p "$state"
  chown "$uid:$gid" "$state"
  chmod 0755 "$state"
  install -d -o "$uid" -g "$gid" -m 0700 "$state/home"
  if ! mountpoint -q "$xdg"; then
    mkdir -p "$xdg"
    mount -t tmpfs -o "mode=0700,uid=$uid,gid=$gid,size=64m" tmpfs "$xdg"
    echo "$xdg" >"$state/xdg-mounted"
  fi
  if ! answers; then
    setsid setpriv --reuid="$uid" --regid="$gid" --init-groups --reset-env \
      env HOME="$state/home" XDG_RUNTIME_DIR="$xdg" PATH=/usr/sbin:/usr/bin:/sbin:/bin \
      DOCKERD_ROOTLESS_ROOTLESSKIT_NET=host DOCKERD_ROOTLESS_ROOTLESSKIT_PORT_DRIVER=none \
      "$script" --host "unix://$sock" --data-root "$state/data" --exec-root "$state/exec" \
      --pidfile "$state/dockerd.pid" --bridge=none --iptables=false --ip-forward=false \
      --ip-masq=false >"$state/dockerd.log" 2>&1 </dev/null &
    echo $! >"$state/rootlesskit.pid"
    for _ in $(seq 1 60); do
      answers && break
      sleep 0.5
    done
  fi
  answers || { tail -20 "$state/dockerd.log" >&2; return 1; }
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
  if [ -f "$state/rootlesskit.pid" ]; then  # rootlesskit ends when its dockerd has
    pid=$(cat "$state/rootlesskit.pid")
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill "$pid" 2>/dev/null || true
    rm -f "$state/rootlesskit.pid"
  fi
  if [ -f "$state/xdg-mounted" ]; then
    xdg=$(cat "$state/xdg-mounted")
    umount "$xdg" 2>/dev/null || true
    rmdir "$xdg" 2>/dev/null || true
    rm -f "$state/xdg-mounted"
  fi
}

"${1:-start}"
