"""Swarm-like redeploys: `up -c`, re-running `up -d`, `watch` over a changed stack."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from conftest import (
    User,
    compose_down,
    devsecrets,
    devsecrets_cmd,
    project_containers,
    project_name,
    write_stack,
)

pytestmark = pytest.mark.docker


def services_in(override: bytes) -> set[str]:
    return set(yaml.load(override, Loader=_Loader)["services"])  # noqa: S506 - our own output


class _Loader(yaml.SafeLoader):
    pass


def _untagged(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> object:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node)
    return loader.construct_scalar(node)  # type: ignore[arg-type]


_Loader.add_multi_constructor("!", _untagged)  # !override, !reset


@pytest.fixture
def env(alice: User, runtime_dir: Path):
    name = project_name()
    yield {
        **alice.subprocess_env(),
        "DEVSECRETS_RUNTIME_DIR": str(runtime_dir),
        "COMPOSE_PROJECT_NAME": name,
    }
    compose_down(name, alice.project)


def test_c_takes_stack_files_like_docker_stack_deploy(alice: User, docker_engine: str, env):
    alice.run("set", "x", input=b"x-value")
    write_stack(alice.project, docker_engine, {"api": {"secrets": ["x"]}})
    extra = {"services": {"worker": {"image": docker_engine, "secrets": ["x"]}}}
    (alice.project / "extra.yml").write_text(yaml.safe_dump(extra))
    args = ["render", "--stdout", "-c", "docker-stack.yml", "--compose-file", "extra.yml"]
    both = devsecrets(args, cwd=alice.project, env=env)
    assert both.returncode == 0, both.stderr.decode()
    assert services_in(both.stdout) == {"api", "worker"}
    mixed = devsecrets(
        ["render", "--stdout", "-c", "docker-stack.yml", "-f", "extra.yml"],
        cwd=alice.project,
        env=env,
    )
    assert mixed.stdout == both.stdout
    one = devsecrets(["render", "--stdout", "-c", "docker-stack.yml"], cwd=alice.project, env=env)
    assert services_in(one.stdout) == {"api"}


def test_watch_refuses_a_project_that_is_not_running(alice: User, docker_engine: str, env):
    alice.run("set", "x", input=b"canary-watch-9f1")
    write_stack(alice.project, docker_engine, {"api": {"secrets": ["x"]}})
    result = devsecrets(["watch", "-p", "nosuchproject9"], cwd=alice.project, env=env)
    assert result.returncode == 1
    lines = result.stderr.decode().splitlines()
    assert lines[0] == (
        "devsecrets: error: no container of project nosuchproject9 is running; nothing to watch"
    )
    assert "`devsecrets up -d -p nosuchproject9`" in lines[1]
    runtime = Path(env["DEVSECRETS_RUNTIME_DIR"])
    assert not (runtime / "nosuchproject9").exists()  # nothing decrypted or written


def _app_id(name: str) -> str:
    (cid,) = project_containers(name, "app")
    return cid


def _read(cid: str, path: str) -> bytes:
    return subprocess.run(["docker", "exec", cid, "cat", path], capture_output=True).stdout


def _rotation_stack(alice: User, image: str, version: str) -> None:
    write_stack(
        alice.project,
        image,
        {"app": {"command": ["sh", "-c", "echo boot; exec sleep 600"], "secrets": ["db"]}},
        {
            "secrets": {"db": {"external": True, "name": f"db_{version}"}},
            "x-devsecrets": {"on-change": {"app": "restart"}},
        },
    )


def test_rerunning_up_d_applies_swarms_model(alice: User, docker_engine: str, env):
    alice.run("set", "db_v2", input=b"two")
    alice.run("set", "db_v3", input=b"three")
    _rotation_stack(alice, docker_engine, "v2")
    name = env["COMPOSE_PROJECT_NAME"]
    first = devsecrets(["up", "-d"], cwd=alice.project, env=env)
    assert first.returncode == 0, first.stderr.decode()
    before = _app_id(name)
    # a new versioned name (as after `docker secret create db_v3`): new containers
    _rotation_stack(alice, docker_engine, "v3")
    again = devsecrets(["up", "-d"], cwd=alice.project, env=env)
    assert again.returncode == 0, again.stderr.decode()
    assert "stack changed → app (recreated)" in again.stderr.decode()
    after = _app_id(name)
    assert after != before
    assert _read(after, "/run/secrets/db") == b"three"
    # the same name with a new value (which Swarm forbids, dev allows): swapped in place,
    # then the service's on-change policy (restart)
    alice.run("set", "db_v3", input=b"three-b")
    third = devsecrets(["up", "-d"], cwd=alice.project, env=env)
    assert third.returncode == 0, third.stderr.decode()
    assert "db_v3 changed → app (restarted: app)" in third.stderr.decode()
    assert _app_id(name) == after
    logs = subprocess.run(["docker", "logs", after], capture_output=True, text=True).stdout
    assert logs.split() == ["boot", "boot"]
    assert _read(after, "/run/secrets/db") == b"three-b"


def test_watch_catches_up_with_a_stack_changed_while_nobody_watched(
    alice: User, docker_engine: str, env
):
    alice.run("set", "db_v2", input=b"two")
    alice.run("set", "db_v3", input=b"three")
    _rotation_stack(alice, docker_engine, "v2")
    name = env["COMPOSE_PROJECT_NAME"]
    assert devsecrets(["up", "-d"], cwd=alice.project, env=env).returncode == 0
    before = _app_id(name)
    _rotation_stack(alice, docker_engine, "v3")  # while nobody watches
    watch = subprocess.Popen(
        [*devsecrets_cmd(), "watch"], cwd=alice.project, env=env,
        stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            ids = project_containers(name, "app")
            if ids and ids != [before] and _read(ids[0], "/run/secrets/db") == b"three":
                break
            assert time.monotonic() < deadline and watch.poll() is None, "no catch-up"
            time.sleep(0.2)
    finally:
        watch.send_signal(signal.SIGTERM)
        _, err = watch.communicate(timeout=60)
    assert "stack changed → app (recreated)" in err.decode()
