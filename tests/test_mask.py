"""Masking: a secret value in compose's output is shown as ****, in `up` and `compose logs`."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import User, compose_down, devsecrets, project_name, write_stack

from devsecrets.mask import Masker

CANARY = b"canary-mask-c0ffee"


def test_masker_hides_current_values_and_not_short_ones():
    values = {
        "db_password": CANARY + b"\n",
        "pin": b"123",
        "key": b"-----BEGIN-----\nAAAABBBBCCCC\n",
    }
    masker = Masker(lambda: values)
    line = b"api-1 | connecting with " + CANARY + b" and pin 123 AAAABBBBCCCC\n"
    assert masker.mask(line) == b"api-1 | connecting with **** and pin 123 ****\n"
    values["db_password"] = b"rotated-value-42"  # a value changed while running
    assert masker.mask(b"x rotated-value-42 " + CANARY) == b"x **** " + CANARY


@pytest.fixture
def echo_stack(alice: User, docker_engine: str, runtime_dir: Path):
    """A service that prints its secret to its log (what a careless app does)."""
    alice.run("set", "db_password", input=CANARY)
    alice.run("set", "pin", input=b"123")  # under MIN_VALUE bytes: shown as is
    write_stack(
        alice.project,
        docker_engine,
        {
            "api": {
                "secrets": ["db_password", "pin"],
                "command": [
                    "sh",
                    "-c",
                    "echo password=$(cat /run/secrets/db_password) pin=$(cat /run/secrets/pin)",
                ],
            }
        },
    )
    name = project_name()
    env = {
        **alice.subprocess_env(),
        "DEVSECRETS_RUNTIME_DIR": str(runtime_dir),
        "COMPOSE_PROJECT_NAME": name,
    }
    yield env
    compose_down(name, alice.project)


@pytest.mark.docker
def test_up_masks_compose_output(alice: User, echo_stack):
    masked = devsecrets(["up", "--no-watch"], cwd=alice.project, env=echo_stack)
    assert masked.returncode == 0, masked.stderr.decode()
    assert b"password=**** pin=123" in masked.stdout  # a 3-byte value is not masked
    assert CANARY not in masked.stdout + masked.stderr
    shown = devsecrets(["up", "--no-watch", "--no-mask"], cwd=alice.project, env=echo_stack)
    assert shown.returncode == 0
    assert b"password=" + CANARY in shown.stdout  # the switch really turns it off


@pytest.mark.docker
def test_compose_logs_masks(alice: User, echo_stack):
    started = devsecrets(["up", "-d"], cwd=alice.project, env=echo_stack)
    assert started.returncode == 0, started.stderr.decode()
    try:
        logs = devsecrets(["compose", "logs", "api"], cwd=alice.project, env=echo_stack)
        assert logs.returncode == 0, logs.stderr.decode()
        assert b"password=****" in logs.stdout
        assert CANARY not in logs.stdout + logs.stderr
        raw = devsecrets(["compose", "--no-mask", "logs", "api"], cwd=alice.project, env=echo_stack)
        assert b"password=" + CANARY in raw.stdout
    finally:
        devsecrets(["down", "-t", "0"], cwd=alice.project, env=echo_stack)


def on_a_terminal(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, bytes]:
    """Run devsecrets with its stdout on a pseudo-terminal: (exit code, what it showed)."""
    import os
    import pty
    import select
    import subprocess

    from conftest import devsecrets_cmd

    leader, follower = pty.openpty()
    child = subprocess.Popen(
        [*devsecrets_cmd(), *args], cwd=cwd, env=env, stdout=follower, stderr=subprocess.PIPE
    )
    os.close(follower)
    shown = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 120)
        if not ready:
            child.kill()
            raise AssertionError("no output for 120 s")
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    os.close(leader)
    child.stderr.read()
    return child.wait(timeout=60), shown


@pytest.mark.docker
def test_masked_output_keeps_compose_colours_on_a_terminal(alice: User, echo_stack):
    started = devsecrets(["up", "-d"], cwd=alice.project, env=echo_stack)
    assert started.returncode == 0, started.stderr.decode()
    try:
        code, shown = on_a_terminal(["compose", "logs", "api"], alice.project, echo_stack)
        assert code == 0
        assert b"password=****" in shown
        assert CANARY not in shown
        assert b"\x1b[" in shown  # compose's colours, although its output went through a pipe
        piped = devsecrets(["compose", "logs", "api"], cwd=alice.project, env=echo_stack)
        assert b"password=****" in piped.stdout
        assert b"\x1b[" not in piped.stdout  # not a terminal: none, as compose does itself
        code, plain = on_a_terminal(
            ["compose", "logs", "api"], alice.project, {**echo_stack, "NO_COLOR": "1"}
        )
        assert code == 0 and b"password=****" in plain
        assert b"\x1b[" not in plain  # the user's choice wins
    finally:
        devsecrets(["down", "-t", "0"], cwd=alice.project, env=echo_stack)
