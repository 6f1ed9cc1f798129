"""`devsecrets up/down/render/compose` against the real engine and compose."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import (
    User,
    compose_down,
    devsecrets,
    project_containers,
    project_name,
    start_foreground_up,
    write_stack,
)

pytestmark = pytest.mark.docker

CANARY = b"canary-up-4be1"


@pytest.fixture
def stack(alice: User, docker_engine: str, runtime_dir: Path):
    """alice's project with a two-service stack; yields (env, project name); always cleaned."""
    name = project_name()
    write_stack(
        alice.project,
        docker_engine,
        {
            "api": {
                "secrets": [
                    "db_password",
                    {"source": "api_token", "target": "token", "mode": 0o400},
                ]
            },
            "worker": {"secrets": ["db_password"]},
        },
    )
    env = {
        **alice.subprocess_env(),
        "DEVSECRETS_RUNTIME_DIR": str(runtime_dir),
        "COMPOSE_PROJECT_NAME": name,
    }
    yield env, name
    compose_down(name, alice.project)


def container(project: str, service: str) -> str:
    ids = project_containers(project, service, stopped=True)
    assert len(ids) == 1, f"expected one {service} container, got {ids}"
    return ids[0]


def exec_in(cid: str, script: str) -> str:
    return subprocess.run(
        ["docker", "exec", cid, "sh", "-c", script], capture_output=True, text=True, check=True
    ).stdout


def test_missing_secrets_are_listed_before_compose_starts(alice: User, stack, runtime_dir: Path):
    env, name = stack
    result = devsecrets(["up", "-d"], cwd=alice.project, env=env)
    assert result.returncode == 1
    err = result.stderr.decode()
    assert (
        "the stack needs 2 secret(s) the store lacks: api_token (api), db_password (api, worker)"
        in err
    )
    assert "devsecrets set api_token; devsecrets set db_password" in err
    assert not (runtime_dir / name).exists()
    assert project_containers(name, stopped=True) == []


def test_up_mounts_exactly_each_services_secrets_and_down_wipes(
    alice: User, stack, runtime_dir: Path
):
    env, name = stack
    alice.run("set", "db_password", input=CANARY)
    alice.run("set", "api_token", input=b"tok")
    result = devsecrets(["up", "-d"], cwd=alice.project, env=env)
    assert result.returncode == 0, result.stderr.decode()
    api, worker = container(name, "api"), container(name, "worker")
    assert exec_in(api, "ls /run/secrets").split() == ["db_password", "token"]
    assert exec_in(worker, "ls /run/secrets").split() == ["db_password"]
    assert exec_in(api, "stat -c '%a %u %g' /run/secrets/token").split() == ["400", "0", "0"]
    assert exec_in(worker, "cat /run/secrets/db_password").encode() == CANARY
    override = (runtime_dir / name / "override.yml").read_text()
    assert CANARY.decode() not in override
    # plain compose commands with the override work through `devsecrets compose`
    ps = devsecrets(["compose", "ps", "--format", "json"], cwd=alice.project, env=env)
    assert ps.returncode == 0, ps.stderr.decode()
    assert {json.loads(line)["Service"] for line in ps.stdout.decode().splitlines()} == {
        "api",
        "worker",
    }

    down = devsecrets(["down"], cwd=alice.project, env=env)
    assert down.returncode == 0, down.stderr.decode()
    assert not (runtime_dir / name).exists()
    # a compose command that starts nothing writes no secrets
    after = devsecrets(["compose", "ps"], cwd=alice.project, env=env)
    assert after.returncode == 0, after.stderr.decode()
    assert not (runtime_dir / name).exists()


def test_render_writes_an_override_with_paths_only(alice: User, stack, runtime_dir: Path):
    env, name = stack
    alice.run("set", "db_password", input=CANARY)
    alice.run("set", "api_token", input=b"tok")
    result = devsecrets(["render"], cwd=alice.project, env=env)
    assert result.returncode == 0, result.stderr.decode()
    path = Path(result.stdout.decode().strip())
    assert path == runtime_dir / name / "override.yml"
    assert oct(path.stat().st_mode)[-3:] == "600"
    text = path.read_text()
    assert "!override" in text and CANARY.decode() not in text
    printed = devsecrets(["render", "--stdout"], cwd=alice.project, env=env)
    assert printed.stdout.decode() == text
    # plain docker compose accepts it together with the user's file
    check = subprocess.run(
        ["docker", "compose", "-f", "docker-stack.yml", "-f", str(path), "config", "-q"],
        cwd=alice.project,
        env=env,
        capture_output=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr.decode()
    assert devsecrets(["down"], cwd=alice.project, env=env).returncode == 0


def test_foreground_up_wipes_the_runtime_dir_when_compose_exits(
    alice: User, stack, runtime_dir: Path
):
    env, name = stack
    stack_file = alice.project / "docker-stack.yml"
    model = yaml.safe_load(stack_file.read_text())
    for service in model["services"].values():
        service["command"] = ["sh", "-c", "test -s /run/secrets/db_password"]
    stack_file.write_text(yaml.safe_dump(model))
    alice.run("set", "db_password", input=CANARY)
    alice.run("set", "api_token", input=b"tok")
    result = devsecrets(
        ["up", "--abort-on-container-exit", "--exit-code-from", "api"], cwd=alice.project, env=env
    )
    assert result.returncode == 0, result.stderr.decode()
    assert not (runtime_dir / name).exists()
    assert CANARY not in result.stdout + result.stderr


def test_sigterm_to_foreground_up_stops_compose_and_wipes(alice: User, stack, runtime_dir: Path):
    env, name = stack
    alice.run("set", "db_password", input=CANARY)
    alice.run("set", "api_token", input=b"tok")
    proc = start_foreground_up(alice.project, env, name, 2)
    assert (runtime_dir / name / "services").exists()
    proc.terminate()
    proc.communicate(timeout=60)
    assert not (runtime_dir / name).exists()


def test_a_restart_after_the_runtime_dir_is_gone_fails_loudly(
    alice: User, stack, runtime_dir: Path
):
    """After a reboot the tmpfs is empty: Docker must refuse to start the container, never
    run it with an empty or missing secret."""
    env, name = stack
    alice.run("set", "db_password", input=CANARY)
    alice.run("set", "api_token", input=b"tok")
    assert devsecrets(["up", "-d"], cwd=alice.project, env=env).returncode == 0
    api = container(name, "api")
    subprocess.run(["docker", "stop", "-t", "0", api], check=True, capture_output=True)
    subprocess.run(["rm", "-rf", str(runtime_dir / name)], check=True)  # what a reboot does
    start = subprocess.run(["docker", "start", api], capture_output=True, text=True, check=False)
    assert start.returncode != 0
    assert "no such file or directory" in start.stderr or "does not exist" in start.stderr
    state = subprocess.run(
        ["docker", "inspect", "-f", "{{.State.Running}}", api],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert state == "false"
    assert not (runtime_dir / name).exists()  # nothing created the path behind our back


def test_no_engine_is_one_line_and_leaves_nothing(alice: User, stack, runtime_dir: Path):
    env, name = stack
    alice.run("set", "db_password", input=CANARY)
    alice.run("set", "api_token", input=b"tok")
    result = devsecrets(
        ["up", "-d"],
        cwd=alice.project,
        env={**env, "DOCKER_HOST": "unix:///nonexistent/docker.sock"},
    )
    assert result.returncode == 1
    assert result.stderr.decode().startswith("devsecrets: error: no Docker engine answers")
    assert not (runtime_dir / name).exists()


@pytest.mark.parametrize("forced", ["host", "engine"])
def test_no_engine_with_a_forced_mode_is_one_line(
    alice: User, stack, runtime_dir: Path, forced: str
):
    """A forced mode runs no probe, so the engine check must still run."""
    env, name = stack
    alice.run("set", "db_password", input=CANARY)
    alice.run("set", "api_token", input=b"tok")
    result = devsecrets(
        ["up", "--engine-mode", forced, "-d"],
        cwd=alice.project,
        env={**env, "DOCKER_HOST": "unix:///nonexistent/docker.sock"},
    )
    assert result.returncode == 1
    assert result.stderr.decode().startswith("devsecrets: error: no Docker engine answers")
    assert not (runtime_dir / name).exists()


def test_compose_too_old_or_missing(alice: User, stack, tmp_path: Path):
    env, _ = stack
    fake = tmp_path / "old-compose"
    fake.write_text("#!/bin/sh\necho 2.20.3\n")
    fake.chmod(0o755)
    old = devsecrets(["up", "-d"], cwd=alice.project, env={**env, "DEVSECRETS_COMPOSE": str(fake)})
    assert old.returncode == 1
    assert "version 2.20.3; devsecrets needs compose >= 2.24.4" in old.stderr.decode()
    wrapper = tmp_path / "always-zero"
    wrapper.write_text('#!/bin/sh\n[ "$1" = version ] && echo 2.40.3\nexit 0\n')
    wrapper.chmod(0o755)
    lying = devsecrets(
        ["up", "-d"], cwd=alice.project, env={**env, "DEVSECRETS_COMPOSE": str(wrapper)}
    )
    assert lying.returncode == 1
    assert "exits 0 even on errors" in lying.stderr.decode()
    gone = devsecrets(
        ["up", "-d"], cwd=alice.project, env={**env, "DEVSECRETS_COMPOSE": str(tmp_path / "nope")}
    )
    assert gone.returncode == 1
    assert "docker compose v2 not found" in gone.stderr.decode()


def test_an_unreadable_stack_is_one_line(alice: User, stack):
    env, _ = stack
    (alice.project / "docker-stack.yml").write_text("services: [\n")
    result = devsecrets(["up", "-d"], cwd=alice.project, env=env)
    assert result.returncode == 1
    lines = result.stderr.decode().strip().splitlines()
    assert lines[0].startswith("devsecrets: error: docker compose cannot read the stack")
    assert len(lines) <= 2


def test_a_stale_runtime_dir_from_a_killed_run_is_cleaned_by_the_next_run(
    alice: User, stack, runtime_dir: Path
):
    env, name = stack
    alice.run("set", "db_password", input=CANARY)
    alice.run("set", "api_token", input=b"tok")
    from devsecrets.runtime_dir import hold, private_root

    root = private_root({"DEVSECRETS_RUNTIME_DIR": str(runtime_dir)})
    stale = root / "dstestgone"  # a foreground run that was SIGKILLed: no containers left
    hold(stale).release()  # made by devsecrets (marked), held by no one now
    (stale / "services" / "api" / "run-secrets").mkdir(parents=True)
    (stale / "services" / "api" / "run-secrets" / "db_password").write_bytes(CANARY)
    (stale / "state.json").write_text(json.dumps({"pid": 2**22 + 7, "detached": False}))
    detached = root / "dstestdetached"  # an `up -d` stack: kept until its `down`
    hold(detached).release()
    (detached / "state.json").write_text(json.dumps({"pid": 2**22 + 7, "detached": True}))
    foreign = root / "dstestforeign"  # not made by devsecrets: never touched
    foreign.mkdir()
    (foreign / "state.json").write_text(json.dumps({"pid": 2**22 + 7, "detached": False}))
    result = devsecrets(["render"], cwd=alice.project, env=env)
    assert result.returncode == 0, result.stderr.decode()
    assert not stale.exists()
    assert detached.exists()
    assert (foreign / "state.json").exists()
    assert devsecrets(["down"], cwd=alice.project, env=env).returncode == 0


def test_include_extends_profiles_and_env_behave_as_in_compose(
    alice: User, docker_engine: str, runtime_dir: Path
):
    """The stack is whatever compose makes of it: included files, extended services,
    profiles, and .env interpolation of an external secret's name."""
    (alice.project / "secrets.yml").write_text(
        yaml.safe_dump(
            {
                "services": {
                    "base": {
                        "image": docker_engine,
                        "network_mode": "none",
                        "secrets": ["db_password"],
                    }
                },
                "secrets": {"db_password": {"external": True, "name": "db_password_${DB_VERSION}"}},
            }
        )
    )
    (alice.project / "compose.yaml").write_text(
        yaml.safe_dump(
            {
                "include": ["secrets.yml"],
                "services": {
                    "api": {"extends": {"service": "base", "file": "secrets.yml"}},
                    "debug": {
                        "image": docker_engine,
                        "network_mode": "none",
                        "profiles": ["debug"],
                        "secrets": ["db_password"],
                    },
                },
            }
        )
    )
    (alice.project / ".env").write_text("DB_VERSION=v2\n")
    alice.run("set", "db_password_v2", input=CANARY)
    env = {
        **alice.subprocess_env(),
        "DEVSECRETS_RUNTIME_DIR": str(runtime_dir),
        "COMPOSE_PROJECT_NAME": project_name(),
    }

    def services(*flags: str) -> set[str]:
        result = devsecrets(["render", *flags, "--stdout"], cwd=alice.project, env=env)
        assert result.returncode == 0, result.stderr.decode()
        return set(yaml.load(result.stdout, Loader=OverrideLoader)["services"])  # noqa: S506 - SafeLoader subclass

    assert services() == {"api", "base"}
    assert services("--profile", "debug") == {"api", "base", "debug"}
    assert devsecrets(["down"], cwd=alice.project, env=env).returncode == 0


class OverrideLoader(yaml.SafeLoader):
    pass


OverrideLoader.add_constructor("!override", lambda loader, node: loader.construct_sequence(node))


def test_ctrl_c_to_foreground_up_stops_compose_and_wipes(alice: User, stack, runtime_dir: Path):
    """Ctrl-C on a terminal signals the whole process group: devsecrets and compose."""
    env, name = stack
    alice.run("set", "db_password", input=CANARY)
    alice.run("set", "api_token", input=b"tok")
    proc = start_foreground_up(alice.project, env, name, 2, new_session=True)
    os.killpg(proc.pid, signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert not (runtime_dir / name).exists()
    assert project_containers(name) == []  # compose stopped them
