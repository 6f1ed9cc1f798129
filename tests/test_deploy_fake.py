"""`devsecrets deploy` against a fake `docker` that records every call: where values go (stdin
only), what is created, reused and pruned, the --yes guard, and cleanup after a failure.
The real engine's behaviour is in test_deploy_swarm.py."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from conftest import User

FAKE = Path(__file__).with_name("fake_docker.py")
pytestmark = pytest.mark.slow  # ~20 docker calls per deploy, each a Python start

STACK = {
    "services": {"api": {"image": "busybox", "secrets": ["db_password", "tok"]}},
    "secrets": {
        "db_password": {"external": True},
        "tok": {"external": True, "name": "api_token"},
    },
}


@pytest.fixture
def fake(tmp_path: Path, alice: User, compose_cli) -> tuple[User, Path]:
    """alice with a fake `docker` first on PATH (compose goes to the real one)."""
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    # -S: no site-packages, a fake docker call starts in half the time
    docker.write_text(f"#!{sys.executable} -S\nexec(open({str(FAKE)!r}).read())\n")
    docker.chmod(0o755)
    log = tmp_path / "docker-calls.jsonl"
    user = alice.with_env(
        {
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "FAKE_REAL_DOCKER": shutil.which("docker"),
            "FAKE_DOCKER_STATE": str(tmp_path / "swarm.json"),
            "FAKE_DOCKER_LOG": str(log),
            "DEVSECRETS_COMPOSE": f"{shutil.which('docker')} compose",
        }
    )
    (alice.project / "docker-stack.yml").write_text(yaml.safe_dump(STACK))
    return user, tmp_path


def swarm(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "swarm.json").read_text())


def names(tmp_path: Path) -> set[str]:
    return {s["Spec"]["Name"] for s in swarm(tmp_path)["secrets"].values()}


def calls(tmp_path: Path) -> list[dict]:
    path = tmp_path / "docker-calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def deploy(user: User, *args: str):
    return user.run("deploy", "-c", str(user.project / "docker-stack.yml"), *args, "shop")


def test_values_reach_docker_on_stdin_only(fake):
    user, tmp = fake
    canary = b"canary-" + secrets.token_hex(16).encode()
    assert user.run("set", "db_password", input=canary).exit_code == 0
    assert user.run("set", "api_token", input=b"tok-value").exit_code == 0
    result = deploy(user, "--yes")
    assert result.exit_code == 0, result.stderr
    log = (tmp / "docker-calls.jsonl").read_bytes()
    # booleans, so a failure never prints the canary
    in_argv_or_env = canary in log
    assert not in_argv_or_env, "the value reached docker's argv or environment"
    in_output = canary.decode() in result.stderr or canary in result.stdout
    assert not in_output, "the value was printed"
    creates = [c for c in calls(tmp) if c["argv"][:2] == ["secret", "create"]]
    assert len(creates) == 2
    by_name = {c["argv"][-2]: c for c in creates}
    (db,) = [n for n in by_name if n.startswith("db_password_")]
    assert by_name[db]["stdin_sha256"] == hashlib.sha256(canary).hexdigest()
    assert by_name[db]["argv"][-1] == "-"
    assert "devsecrets.name=db_password" in by_name[db]["argv"]
    assert "devsecrets.manager=devsecrets" in by_name[db]["argv"]
    # the rendered stack file on stdin holds names only
    (stack_deploy,) = [c for c in calls(tmp) if c["argv"][:2] == ["stack", "deploy"]]
    assert stack_deploy["argv"][-3:] == ["-c", "-", "shop"]
    # nothing on disk in the project, the home or the temp dirs holds the canary
    for root in (user.project, user.home):
        for path in root.rglob("*"):
            on_disk = path.is_file() and canary in path.read_bytes()
            assert not on_disk, f"the value is in {path}"


def test_second_deploy_creates_nothing_and_a_change_rotates_and_prunes(fake):
    user, tmp = fake
    user.run("set", "db_password", input=b"one")
    user.run("set", "api_token", input=b"tok")
    assert deploy(user, "--yes").exit_code == 0
    first = names(tmp)
    assert len(first) == 2

    again = deploy(user, "--yes")
    assert again.exit_code == 0, again.stderr
    assert names(tmp) == first
    assert "created" not in again.stderr

    user.run("set", "db_password", input=b"two")
    plan = deploy(user, "--dry-run")
    assert plan.exit_code == 0, plan.stderr
    lines = plan.out.splitlines()
    assert sum(ln.startswith("create  db_password_") for ln in lines) == 1
    assert sum(ln.startswith("reuse   api_token_") for ln in lines) == 1
    assert sum(ln.startswith("prune   db_password_") for ln in lines) == 1
    assert names(tmp) == first  # dry run changed nothing

    rotated = deploy(user, "--yes")
    assert rotated.exit_code == 0, rotated.stderr
    now = names(tmp)
    assert len(now) == 2 and now != first
    (old,) = {n for n in first if n.startswith("db_password_")}
    assert old not in now
    assert f"removed {old}" in rotated.stderr


def test_keep_keeps_previous_versions_and_prune_only_removes_them(fake):
    user, tmp = fake
    user.run("set", "api_token", input=b"tok")
    for value in (b"1", b"2", b"3"):
        user.run("set", "db_password", input=value)
        assert deploy(user, "--yes", "--keep", "1").exit_code == 0
    db = sorted(n for n in names(tmp) if n.startswith("db_password_"))
    assert len(db) == 2  # current + one kept
    result = deploy(user, "--prune-only", "--yes")
    assert result.exit_code == 0, result.stderr
    assert len([n for n in names(tmp) if n.startswith("db_password_")]) == 1


def test_non_interactive_deploy_needs_yes_and_changes_nothing(fake):
    user, tmp = fake
    user.run("set", "db_password", input=b"one")
    user.run("set", "api_token", input=b"tok")
    result = deploy(user)
    assert result.exit_code == 2
    assert "devsecrets: hint: pass --yes" in result.stderr
    assert "DOCKER_HOST" in result.stderr or "context default" in result.stderr
    assert not [
        c for c in calls(tmp) if c["argv"][:2] in (["secret", "create"], ["stack", "deploy"])
    ]
    assert "devsecrets-deploy-key" not in {p.name.split(".")[0] for p in user.store.iterdir()}


def test_failed_stack_deploy_removes_the_new_version_and_keeps_the_old(fake):
    user, tmp = fake
    user.run("set", "db_password", input=b"one")
    user.run("set", "api_token", input=b"tok")
    assert deploy(user, "--yes").exit_code == 0
    before = names(tmp)
    user.run("set", "db_password", input=b"two")
    failing = user.with_env({"FAKE_DEPLOY_FAIL": "1"})
    result = deploy(failing, "--yes")
    assert result.exit_code == 1
    assert "docker stack deploy failed" in result.stderr
    assert "previous secret versions are kept" in result.stderr
    assert names(tmp) == before  # the new version was created, then removed again


def test_missing_store_secret_is_left_to_the_cluster_and_env_secrets_are_refused(fake):
    user, tmp = fake
    user.run("set", "db_password", input=b"one")  # api_token is not in the store
    result = deploy(user, "--dry-run")
    assert result.exit_code == 0, result.stderr
    assert "left    tok: external api_token, not in the store" in result.out
    stack = dict(STACK, secrets={**STACK["secrets"], "tok": {"environment": "TOK"}})
    (user.project / "docker-stack.yml").write_text(yaml.safe_dump(stack))
    refused = deploy(user, "--dry-run", "--yes")
    assert refused.exit_code == 1
    assert "comes from the environment" in refused.stderr


def test_an_engine_that_is_no_swarm_manager_is_refused(fake):
    user, tmp = fake
    user.run("set", "db_password", input=b"one")
    result = deploy(user.with_env({"FAKE_SWARM_STATE": "inactive"}), "--dry-run")
    assert result.exit_code == 1
    assert "is not a swarm manager (swarm: inactive)" in result.stderr
    assert "devsecrets: hint:" in result.stderr


def test_keys_swarm_ignores_and_a_dotenv_are_warned_about(fake):
    user, tmp = fake
    user.run("set", "db_password", input=b"one")
    user.run("set", "api_token", input=b"tok")
    stack = {**STACK, "services": {"api": {**STACK["services"]["api"], "container_name": "x1"}}}
    (user.project / "docker-stack.yml").write_text(yaml.safe_dump(stack))
    (user.project / ".env").write_text("TAG=1\n")
    result = deploy(user, "--dry-run")
    assert result.exit_code == 0, result.stderr
    assert "warning: service api: docker stack deploy ignores container_name" in result.stderr
    assert "warning: docker stack deploy does not read" in result.stderr


def test_a_stack_file_nested_too_deeply_is_one_line_and_changes_nothing(fake):
    """compose accepts an x- field nested thousands deep; reading compose's JSON of it crashed
    with a RecursionError, exit 3 (up, render and check too): now one line, exit 1, nothing
    created."""
    depth = 3000
    user, tmp = fake
    assert user.run("set", "db_password", input=b"v").exit_code == 0
    assert user.run("set", "api_token", input=b"t").exit_code == 0
    stack = user.project / "docker-stack.yml"
    stack.write_text(stack.read_text() + "x-deep: " + "[" * depth + "]" * depth + "\n")
    result = deploy(user, "--yes")
    assert result.exit_code == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("devsecrets: error:")]
    assert len(errors) == 1 and "nested too deeply" in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    made = [c for c in calls(tmp) if c["argv"][:2] in (["secret", "create"], ["stack", "deploy"])]
    assert made == []
