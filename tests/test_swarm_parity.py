"""Swarm parity: the same stack deployed to a real single-node swarm and run with
`devsecrets up`; every container must see its secrets identically (ARCHITECTURE.md, decision 6)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import (
    PARITY_SECRETS,
    User,
    compose_down,
    devsecrets,
    parity_values,
    probe_secrets,
    project_name,
    wait_for,
)

pytestmark = [pytest.mark.docker, pytest.mark.slow]

# One stack file for both. Swarm tasks join the `host` network (our network rule: no other);
# locally a small extra file swaps that for `network_mode: none`, as a developer's own
# override would. The secrets blocks are the same bytes for both.
LOCAL_NETWORK = """
services:
  api: {network_mode: none, networks: !reset null}
  worker: {network_mode: none, networks: !reset null}
networks: !reset {}
"""


def stack_file(image: str) -> dict:
    keep_alive = {
        "image": image,
        "command": ["sleep", "600"],
        "stop_signal": "SIGKILL",
        "networks": ["hostnet"],
    }
    return {
        "services": {s: {**keep_alive, "secrets": refs} for s, refs in PARITY_SECRETS.items()},
        "networks": {"hostnet": {"external": True, "name": "host"}},
        "secrets": {
            k: {"external": True} for k in ("db_password", "api_token", "tls_key", "worker_only")
        },
    }


def sh(*argv: str, input: bytes | None = None, check: bool = True) -> str:
    return subprocess.run(list(argv), input=input, capture_output=True, check=check).stdout.decode()


def test_devsecrets_up_matches_swarm(alice: User, swarm, docker_engine: str, runtime_dir: Path):
    values = parity_values()
    for name, value in values.items():
        assert alice.run("set", name, input=value).exit_code == 0
    (alice.project / "docker-stack.yml").write_text(yaml.safe_dump(stack_file(docker_engine)))
    (alice.project / "local-network.yml").write_text(LOCAL_NETWORK)

    stack = project_name()
    created_secrets = []
    try:
        for name, value in values.items():  # as an operator would, value on stdin
            sh("docker", "secret", "create", name, "-", input=value)
            created_secrets.append(name)
        subprocess.run(
            ["docker", "stack", "deploy", "-c", str(alice.project / "docker-stack.yml"), stack],
            capture_output=True,
            check=True,
        )

        def task(service: str):
            ids = sh(
                "docker",
                "ps",
                "-q",
                "--filter",
                f"label=com.docker.swarm.service.name={stack}_{service}",
            ).split()
            return ids[0] if ids else None

        swarm_seen = {
            s: probe_secrets(wait_for(lambda s=s: task(s), f"swarm task {s}", 90))
            for s in ("api", "worker")
        }

        env = {**alice.subprocess_env(), "DEVSECRETS_RUNTIME_DIR": str(runtime_dir)}
        local = project_name()
        files = ["-f", "docker-stack.yml", "-f", "local-network.yml", "-p", local]
        up = devsecrets(["up", *files, "-d"], cwd=alice.project, env=env)
        assert up.returncode == 0, up.stderr.decode()
        try:

            def container(service: str):
                return sh(
                    "docker",
                    "ps",
                    "-q",
                    "--filter",
                    f"label=com.docker.compose.project={local}",
                    "--filter",
                    f"label=com.docker.compose.service={service}",
                ).strip()

            local_seen = {
                s: probe_secrets(wait_for(lambda s=s: container(s), f"compose {s}", 90))
                for s in ("api", "worker")
            }
        finally:
            devsecrets(["down", *files, "-t", "0"], cwd=alice.project, env=env)
            compose_down(local, alice.project)
    finally:
        subprocess.run(["docker", "stack", "rm", stack], capture_output=True, check=False)
        for name in created_secrets:
            wait_for(
                lambda n=name: (
                    subprocess.run(["docker", "secret", "rm", n], capture_output=True).returncode
                    == 0
                ),
                f"secret {name} to be released",
                timeout=60,
            )

    # Every line holds path, size, mode, uid, gid, sha256, fs type, rw/ro; no values.
    assert local_seen == swarm_seen
    api = {ln.split()[0]: ln.split()[1:] for ln in swarm_seen["api"] if not ln.startswith("dir ")}
    worker = {
        ln.split()[0]: ln.split()[1:] for ln in swarm_seen["worker"] if not ln.startswith("dir ")
    }
    assert set(api) == {"/run/secrets/db_password", "/run/secrets/token", "/etc/app/tls.key"}
    assert set(worker) == {"/run/secrets/db_password", "/run/secrets/nested/worker"}
    assert api["/etc/app/tls.key"][1:4] == ["400", "1000", "1001"]
    assert worker["/run/secrets/nested/worker"][1:4] == ["440", "33", "33"]
    assert all(v[1:4] == ["444", "0", "0"] for k, v in api.items() if k != "/etc/app/tls.key")
    assert all(v[-2:] == ["tmpfs", "ro"] for v in [*api.values(), *worker.values()])
    assert os.geteuid() == 0, "uid/gid parity is only exact as root; see owner warnings otherwise"
