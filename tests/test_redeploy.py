"""Swarm-like redeploys: `up -c`, re-running `up -d`, `watch` over a changed stack."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from conftest import (
    Lines,
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


def _two_service_stack(alice: User, image: str, version: str) -> None:
    """`app` reads a versioned secret (a new version is a new source: new containers);
    `web` reads `tls` (a new value under the same name: in place, then `web` restarts)."""
    boot = ["sh", "-c", "echo boot; exec sleep 600"]
    write_stack(
        alice.project,
        image,
        {"app": {"command": boot, "secrets": ["db"]}, "web": {"command": boot, "secrets": ["tls"]}},
        {
            "secrets": {"db": {"external": True, "name": f"db_{version}"}},
            "x-devsecrets": {"on-change": {"app": "restart", "web": "restart"}},
        },
    )


def _changed_while_up_d(alice: User, image: str, env, first: list[str]) -> tuple[str, str]:
    """`FIRST` (an up -d) over the v2 stack, then v3 and a new tls value while nobody
    watches. Returns the ids of app's and web's containers."""
    alice.run("set", "db_v2", input=b"two")
    alice.run("set", "db_v3", input=b"three")
    alice.run("set", "tls", input=b"tls-one")
    _two_service_stack(alice, image, "v2")
    name = env["COMPOSE_PROJECT_NAME"]
    started = devsecrets(first, cwd=alice.project, env=env)
    assert started.returncode == 0, started.stderr.decode()
    ids = (_app_id(name), *project_containers(name, "web"))
    _two_service_stack(alice, image, "v3")
    alice.run("set", "tls", input=b"tls-two")
    return ids  # type: ignore[return-value]


def _assert_swarms_model(name: str, app_before: str, web_before: str, err: str) -> None:
    assert "stack changed → app (recreated)" in err
    assert "tls changed → web (restarted: web)" in err
    app_after = _app_id(name)
    assert app_after != app_before  # new containers for new sources
    assert _read(app_after, "/run/secrets/db") == b"three"
    assert project_containers(name, "web") == [web_before]  # same container, restarted
    assert _read(web_before, "/run/secrets/tls") == b"tls-two"
    logs = subprocess.run(["docker", "logs", web_before], capture_output=True, text=True).stdout
    assert logs.split() == ["boot", "boot"]


def test_a_foreground_up_over_a_stack_changed_under_up_d_applies_swarms_model(
    alice: User, docker_engine: str, env
):
    name = env["COMPOSE_PROJECT_NAME"]
    app_before, web_before = _changed_while_up_d(alice, docker_engine, env, ["up", "-d"])
    up = subprocess.Popen(
        [*devsecrets_cmd(), "up", "--no-mask"], cwd=alice.project, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    lines = Lines(up.stderr)
    try:
        lines.wait_for("stack changed → app", timeout=120)  # a loaded CI engine is slow
        lines.wait_for("tls changed → web", timeout=120)
        _assert_swarms_model(name, app_before, web_before, "".join(lines.lines))
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(timeout=60)


def test_compose_up_d_applies_swarms_model_like_up_d(alice: User, docker_engine: str, env):
    name = env["COMPOSE_PROJECT_NAME"]
    app_before, web_before = _changed_while_up_d(alice, docker_engine, env, ["compose", "up", "-d"])
    again = devsecrets(["compose", "up", "-d"], cwd=alice.project, env=env)
    assert again.returncode == 0, again.stderr.decode()
    _assert_swarms_model(name, app_before, web_before, again.stderr.decode())


def test_a_rerun_starts_no_service_that_was_not_running(alice: User, docker_engine: str, env):
    alice.run("set", "db_v2", input=b"two")
    alice.run("set", "db_v3", input=b"three")
    alice.run("set", "tls", input=b"tls-one")
    _two_service_stack(alice, docker_engine, "v2")
    name = env["COMPOSE_PROJECT_NAME"]
    assert devsecrets(["up", "-d", "web"], cwd=alice.project, env=env).returncode == 0
    (web,) = project_containers(name, "web")
    _two_service_stack(alice, docker_engine, "v3")  # app's source changes; app never ran
    subprocess.run(["docker", "stop", web], capture_output=True, check=True)
    alice.run("set", "tls", input=b"tls-two")  # web's policy is restart; web is stopped
    again = devsecrets(["up", "-d", "--no-start", "web"], cwd=alice.project, env=env)
    assert again.returncode == 0, again.stderr.decode()
    err = again.stderr.decode()
    assert "stack changed → app (not running)" in err
    assert "restarted" not in err
    assert project_containers(name) == []  # nothing started: not app, not web
    assert project_containers(name, "app", stopped=True) == []
