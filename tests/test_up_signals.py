"""`up` and `compose up` leave no plaintext behind: bad input is refused before anything is
written, a stop signal at any moment after materializing wipes, and a running `edit` in
another terminal survives their cleanup."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import (
    User,
    compose_down,
    devsecrets,
    devsecrets_cmd,
    project_name,
    write_stack,
)

pytestmark = pytest.mark.docker

CANARY = b"canary-upsig-77a0"


def leftovers(runtime_dir: Path) -> list[str]:
    """Every file under the runtime root that holds the canary."""
    if not runtime_dir.exists():
        return []
    return [str(p) for p in runtime_dir.rglob("*") if p.is_file() and p.read_bytes() == CANARY]


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT])
def test_a_stop_signal_just_after_materializing_leaves_no_plaintext(
    alice: User, stack, runtime_dir: Path, signum
):
    env, name = stack
    secret = runtime_dir / name / "services" / "api" / "run-secrets" / "db_password"
    proc = subprocess.Popen(
        [*devsecrets_cmd(), "up"],
        cwd=alice.project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not secret.exists():
        assert proc.poll() is None, proc.communicate()[1].decode()
        assert time.monotonic() < deadline, "never materialized"
        time.sleep(0.001)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=90)
    assert proc.returncode != 0
    assert leftovers(runtime_dir) == []
    assert not (runtime_dir / name).exists()
    assert CANARY not in err


def test_a_bad_on_change_policy_in_the_stack_is_refused_before_any_secret_is_written(
    alice: User, docker_engine: str, runtime_dir: Path
):
    name = project_name()
    write_stack(
        alice.project,
        docker_engine,
        {"api": {"secrets": ["db_password"]}},
        extra={"x-devsecrets": {"on-change": {"api": "explode"}}},
    )
    alice.run("set", "db_password", input=CANARY)
    env = {
        **alice.subprocess_env(),
        "DEVSECRETS_RUNTIME_DIR": str(runtime_dir),
        "COMPOSE_PROJECT_NAME": name,
    }
    for command in (["up", "-d"], ["up"], ["render"], ["compose", "up"]):
        result = devsecrets(command, cwd=alice.project, env=env)
        # a bad stack file is an expected failure (1), not a command-line mistake (2)
        assert result.returncode == 1, (command, result.stderr.decode())
        assert "unknown on-change policy 'explode'" in result.stderr.decode()
        assert not (runtime_dir / name).exists(), command
    compose_down(name, alice.project)


def test_a_foreground_compose_up_wipes_like_up(alice: User, docker_engine: str, runtime_dir):
    name = project_name()
    write_stack(
        alice.project,
        docker_engine,
        {"api": {"secrets": ["db_password"], "command": ["cat", "/run/secrets/db_password"]}},
    )
    alice.run("set", "db_password", input=CANARY)
    env = {
        **alice.subprocess_env(),
        "DEVSECRETS_RUNTIME_DIR": str(runtime_dir),
        "COMPOSE_PROJECT_NAME": name,
    }
    try:
        # --no-mask: the output must show the value itself, proving the container read it
        result = devsecrets(["compose", "--no-mask", "up"], cwd=alice.project, env=env)
        assert result.returncode == 0, result.stderr.decode()
        assert CANARY in result.stdout  # the container read it
        assert not (runtime_dir / name).exists()
        detached = devsecrets(["compose", "up", "-d"], cwd=alice.project, env=env)
        assert detached.returncode == 0, detached.stderr.decode()
        assert leftovers(runtime_dir) != []  # -d: kept until down
        assert devsecrets(["down"], cwd=alice.project, env=env).returncode == 0
        assert leftovers(runtime_dir) == []
    finally:
        compose_down(name, alice.project)


def test_an_open_edit_survives_the_cleanup_of_render_in_another_terminal(
    alice: User, stack, runtime_dir: Path, tmp_path: Path
):
    env, name = stack
    go = tmp_path / "go"
    log = tmp_path / "editor.log"
    script = tmp_path / "editor.sh"
    script.write_text(
        f'#!/bin/sh\necho "$1" > {log}.tmp && mv {log}.tmp {log}\n'
        f'while [ ! -e {go} ]; do sleep 0.05; done\nprintf edited > "$1"\n'
    )
    script.chmod(0o755)
    editing = subprocess.Popen(
        [*devsecrets_cmd(), "--store", str(alice.store), "edit", "other"],
        env={**env, "EDITOR": str(script)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not log.exists():
            assert editing.poll() is None, editing.communicate()[1].decode()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        copy = Path(log.read_text().strip())
        assert copy.parent.parent == runtime_dir
        rendered = devsecrets(["render"], cwd=alice.project, env=env)  # cleans stale dirs
        assert rendered.returncode == 0, rendered.stderr.decode()
        assert copy.exists()
    finally:
        go.touch()
        _, err = editing.communicate(timeout=60)
    assert editing.returncode == 0, err.decode()
    assert alice.run("get", "other").stdout == b"edited"
    assert devsecrets(["down"], cwd=alice.project, env=env).returncode == 0


def test_render_and_down_in_a_users_runtime_dir_touch_nothing_of_theirs(
    alice: User, docker_engine: str, tmp_path: Path
):
    """DEVSECRETS_RUNTIME_DIR pointed at a directory that already holds things (an
    $XDG_RUNTIME_DIR, a home folder): render, up and down work in a subdirectory of their own
    and neither delete nor chmod anything else."""
    given = Path("/dev/shm") / f"devsecrets-home-{project_name()}"
    given.mkdir(mode=0o755)
    try:
        for sub in ("gnupg", "systemd", ".ssh", "Documents"):
            (given / sub).mkdir()
            (given / sub / "keep").write_text(sub)
        name = project_name()
        write_stack(alice.project, docker_engine, {"api": {"secrets": ["db_password"]}})
        alice.run("set", "db_password", input=CANARY)
        env = {
            **alice.subprocess_env(),
            "DEVSECRETS_RUNTIME_DIR": str(given),
            "COMPOSE_PROJECT_NAME": name,
        }
        try:
            rendered = devsecrets(["render"], cwd=alice.project, env=env)
            assert rendered.returncode == 0, rendered.stderr.decode()
            assert rendered.stdout.decode().startswith(str(given / "devsecrets" / name))
            assert devsecrets(["down"], cwd=alice.project, env=env).returncode == 0
        finally:
            compose_down(name, alice.project)
        for sub in ("gnupg", "systemd", ".ssh", "Documents"):
            assert (given / sub / "keep").read_text() == sub
        assert oct(given.stat().st_mode)[-3:] == "755"
        assert leftovers(given) == []
    finally:
        shutil.rmtree(given)


@pytest.mark.parametrize("detached", [False, True], ids=["foreground", "detached"])
def test_a_stop_signal_as_compose_is_about_to_start_leaves_no_plaintext(
    alice: User, stack, runtime_dir: Path, monkeypatch: pytest.MonkeyPatch, detached: bool
):
    """The moment `up` hands its files from its preparation's cleanup to `start_stack`'s:
    a stop signal there (injected at start_stack's first call) is covered by one of them."""
    from devsecrets import compose

    env, name = stack
    real, calls = compose.is_detached, []

    def interrupted(args):
        calls.append(list(args))
        if len(calls) == 2:  # bring_up's own call is the first; start_stack's the second
            raise KeyboardInterrupt
        return real(args)

    monkeypatch.setattr(compose, "is_detached", interrupted)
    monkeypatch.chdir(alice.project)
    extra = {"DEVSECRETS_RUNTIME_DIR": str(runtime_dir), "COMPOSE_PROJECT_NAME": name}
    result = alice.run("up", *(["-d"] if detached else []), env=extra)
    assert len(calls) == 2
    assert result.exit_code == 130
    assert leftovers(runtime_dir) == []
    assert not (runtime_dir / name).exists()
