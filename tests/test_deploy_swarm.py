"""`devsecrets deploy` on a real single-node swarm: deploy, read the secret in the task, rotate
it, prune the old version after the rollout, redeploy unchanged, survive a failing deploy and
a failing rollout."""

from __future__ import annotations

import hashlib
import json
import secrets
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from conftest import User, devsecrets
from test_leak_audit import files_containing

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def sh(*argv: str) -> str:
    return subprocess.run(list(argv), capture_output=True, text=True, check=False).stdout


def managed_secrets() -> dict[str, dict]:
    ids = sh("docker", "secret", "ls", "-q", "--filter", "label=devsecrets.manager=devsecrets")
    if not ids.split():
        return {}
    found = json.loads(sh("docker", "secret", "inspect", *ids.split()))
    return {s["Spec"]["Name"]: s for s in found}


def running_task(stack: str, timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ids = sh(
            "docker", "ps", "-q", "--filter", f"label=com.docker.swarm.service.name={stack}_api"
        ).split()
        if len(ids) == 1:
            return ids[0]
        time.sleep(0.5)
    raise AssertionError("no single running task")


def seen_in_task(container: str) -> str:
    """A digest of what the task reads, so a failing assertion never prints a value."""
    out = subprocess.run(
        ["docker", "exec", container, "cat", "/run/secrets/db_password"],
        capture_output=True,
        check=True,
    ).stdout
    return hashlib.sha256(out).hexdigest()


def digest(value: bytes) -> str:
    return hashlib.sha256(value).hexdigest()


def test_deploy_rotates_prunes_and_survives_a_failed_deploy(
    alice: User, swarm, docker_engine: str, tmp_path: Path
):
    stack = f"dsdeploy{secrets.token_hex(3)}"
    (alice.project / "docker-stack.yml").write_text(
        yaml.safe_dump(
            {
                "version": "3.8",
                "services": {
                    "api": {
                        "image": docker_engine,
                        # a value containing "bad" makes the new task fail: a failed rollout
                        "command": [
                            "sh",
                            "-c",
                            "grep -q bad /run/secrets/db_password && exit 1; exec sleep 600",
                        ],
                        "stop_signal": "SIGKILL",
                        "networks": ["hostnet"],
                        "secrets": ["db_password"],
                        "deploy": {
                            "update_config": {
                                "order": "start-first",
                                "failure_action": "rollback",
                                "monitor": "3s",
                            },
                            "restart_policy": {"condition": "none"},
                        },
                    }
                },
                "networks": {"hostnet": {"external": True, "name": "host"}},
                "secrets": {"db_password": {"external": True}},
            }
        )
    )
    (alice.project / "broken.yml").write_text(
        yaml.safe_dump(
            {
                "version": "3.8",
                "services": {"api": {"networks": ["nonet"]}},
                "networks": {"nonet": {"external": True, "name": "dsdeploy-no-such-network"}},
            }
        )
    )
    env = alice.subprocess_env()
    canary = [b"canary-" + secrets.token_hex(12).encode() for _ in range(3)]

    def deploy(*args: str) -> subprocess.CompletedProcess:
        return devsecrets(
            ["deploy", "-c", "docker-stack.yml", *args, "--yes", "--timeout", "120", stack],
            cwd=alice.project,
            env=env,
        )

    try:
        assert alice.run("set", "db_password", input=canary[0]).exit_code == 0
        first = deploy()
        assert first.returncode == 0, first.stderr.decode()
        assert b"changing the swarm at DOCKER_HOST=" in first.stderr
        (v1,) = managed_secrets()
        labels = managed_secrets()[v1]["Spec"]["Labels"]
        assert labels["devsecrets.name"] == "db_password"
        assert v1 == f"db_password_{labels['devsecrets.hash'][:12]}"
        task1 = running_task(stack)
        assert seen_in_task(task1) == digest(canary[0])

        # unchanged: no new secret object, the task stays
        again = deploy()
        assert again.returncode == 0, again.stderr.decode()
        assert list(managed_secrets()) == [v1]
        assert (
            managed_secrets()[v1]["ID"]
            == json.loads(sh("docker", "secret", "inspect", v1))[0]["ID"]
        )

        # a new value: a new version, the rolling update moves the task, the old one is pruned
        assert alice.run("set", "db_password", input=canary[1]).exit_code == 0
        rotated = deploy()
        assert rotated.returncode == 0, rotated.stderr.decode()
        (v2,) = managed_secrets()
        assert v2 != v1
        assert f"removed {v1}".encode() in rotated.stderr
        task2 = running_task(stack)
        assert task2 != task1
        assert seen_in_task(task2) == digest(canary[1])

        # a deploy that fails: the old version stays, the new one is removed, the task runs on
        assert alice.run("set", "db_password", input=canary[2]).exit_code == 0
        failed = devsecrets(
            ["deploy", "-c", "docker-stack.yml", "-c", "broken.yml", "--yes", stack],
            cwd=alice.project,
            env=env,
        )
        assert failed.returncode == 1, failed.stderr.decode()
        assert b"previous secret versions are kept" in failed.stderr
        assert list(managed_secrets()) == [v2]
        assert running_task(stack) == task2
        assert seen_in_task(task2) == digest(canary[1])

        # a rollout that fails: Swarm rolls back, the new version goes, the old one is kept and
        # the service runs on with it (start-first may already have replaced the old task once
        # the new one ran for a moment, so the task itself may be a new one)
        assert alice.run("set", "db_password", input=b"bad-" + canary[2]).exit_code == 0
        rollback = deploy()
        assert rollback.returncode == 1, rollback.stderr.decode()
        assert b"the rollout failed" in rollback.stderr
        assert b"previous secret versions are kept" in rollback.stderr
        assert list(managed_secrets()) == [v2]
        deadline = time.monotonic() + 90
        while True:
            try:
                if seen_in_task(running_task(stack)) == digest(canary[1]):
                    break
            except subprocess.CalledProcessError:
                pass  # the task went away between ps and exec
            assert time.monotonic() < deadline, "the service never ran the old value again"
            time.sleep(0.5)

        output = first.stderr + first.stdout + rotated.stderr + failed.stderr
        for value in canary:  # never on disk outside the engine, never in our output
            printed = value in output
            assert not printed, "a value was printed"
            assert files_containing(value, [tmp_path, Path("/dev/shm")]) == []
    finally:
        subprocess.run(["docker", "stack", "rm", stack], capture_output=True, check=False)
        deadline = time.monotonic() + 60
        while managed_secrets() and time.monotonic() < deadline:
            for name in managed_secrets():
                subprocess.run(["docker", "secret", "rm", name], capture_output=True, check=False)
            time.sleep(0.5)
