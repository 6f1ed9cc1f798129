#!/usr/bin/env bash
# A remote Docker engine as `DOCKER_HOST=ssh://…` sees it, on loopback only: a private sshd
# on 127.0.0.1 whose one key may run nothing but `docker system dial-stdio` against the
# isolated engine (.ci/dockerd-isolated.sh). Its own config, keys, known_hosts and pid file
# live in the state dir; nothing system-wide is changed but /run/sshd (sshd's privilege
# separation directory). The docker CLI reaches it through an `ssh` wrapper in $state/bin
# that adds `-F $state/ssh_config` (ssh reads ~/.ssh of the passwd entry, not of $HOME).
# Usage: bash .ci/sshd-loopback.sh start|stop. Start prints two lines: the DOCKER_HOST and the
# directory to put first on PATH. Needs sshd (openssh-server) and DEVSECRETS_ISOLATED_DOCKER_HOST.
set -euo pipefail
state=${DEVSECRETS_SSH_STATE:-/tmp/devsecrets-sshd-loopback}
port=${DEVSECRETS_SSH_PORT:-22422}

start() {
  : "${DEVSECRETS_ISOLATED_DOCKER_HOST:?set it to the DOCKER_HOST of the isolated engine}"
  mkdir -p "$state/bin" /run/sshd
  chmod 0700 "$state"
  [ -f "$state/host_key" ] || ssh-keygen -q -t ed25519 -N '' -f "$state/host_key"
  [ -f "$state/client_key" ] || ssh-keygen -q -t ed25519 -N '' -f "$state/client_key"
  docker_bin=$(command -v docker)
  printf 'command="DOCKER_HOST=%s exec %s system dial-stdio",no-port-forwarding,no-agent-forwarding,no-X11-forwarding,no-pty %s\n' \
    "$DEVSECRETS_ISOLATED_DOCKER_HOST" "$docker_bin" "$(cat "$state/client_key.pub")" >"$state/authorized_keys"
  cat >"$state/sshd_config" <<EOF
ListenAddress 127.0.0.1:$port
HostKey $state/host_key
PidFile $state/sshd.pid
AuthorizedKeysFile $state/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
StrictModes no
UsePAM no
AllowTcpForwarding no
X11Forwarding no
EOF
  printf '[127.0.0.1]:%s %s\n' "$port" "$(cut -d' ' -f1,2 "$state/host_key.pub")" >"$state/known_hosts"
  cat >"$state/ssh_config" <<EOF
Host 127.0.0.1
  Port $port
  User root
  IdentityFile $state/client_key
  IdentitiesOnly yes
  UserKnownHostsFile $state/known_hosts
  StrictHostKeyChecking yes
  BatchMode yes
EOF
  printf '#!/bin/sh\nexec /usr/bin/ssh -F %s "$@"\n' "$state/ssh_config" >"$state/bin/ssh"
  chmod 0755 "$state/bin/ssh"
  if ! [ -f "$state/sshd.pid" ] || ! kill -0 "$(cat "$state/sshd.pid")" 2>/dev/null; then
    /usr/sbin/sshd -f "$state/sshd_config" -E "$state/sshd.log"
  fi
  for _ in $(seq 1 40); do
    PATH="$state/bin:$PATH" DOCKER_HOST="ssh://root@127.0.0.1:$port" docker version \
      --format '{{.Server.Version}}' >/dev/null 2>&1 && break
    sleep 0.25
  done
  PATH="$state/bin:$PATH" DOCKER_HOST="ssh://root@127.0.0.1:$port" docker version \
    --format '{{.Server.Version}}' >/dev/null || { tail -5 "$state/sshd.log" >&2; return 1; }
  echo "ssh://root@127.0.0.1:$port"
  echo "$state/bin"
}

stop() {
  if [ -f "$state/sshd.pid" ]; then
    kill "$(cat "$state/sshd.pid")" 2>/dev/null || true
    rm -f "$state/sshd.pid"
  fi
}

"${1:-start}"
