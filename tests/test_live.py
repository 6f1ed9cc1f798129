"""Live secrets against the real engine: changes reach running containers atomically."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import (
    Lines,
    User,
    compose_down,
    devsecrets_cmd,
    project_containers,
    project_name,
    start_foreground_up,
    write_stack,
)

pytestmark = [pytest.mark.docker, pytest.mark.slow]

# Prints the digest of /run/secrets/x each time it differs from the last read; a torn, empty
# or missing read shows up as a digest nobody wrote (or an empty one). `$$`: compose
# interpolates commands.
READER = (
    'last=""; while :; do d=$$(md5sum < /run/secrets/x | cut -c1-32); '
    'if [ "$$d" != "$$last" ]; then echo "R $$d"; last=$$d; fi; done'
)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()  # noqa: S324 - a fingerprint, not security


class Running:
    """A foreground `devsecrets up` in the background, for one test."""

    def __init__(
        self,
        user: User,
        services: dict,
        runtime_dir: Path,
        docker_engine: str,
        extra: dict | None = None,
        args: tuple[str, ...] = (),
    ):
        self.user, self.name, self.image, self.extra = user, project_name(), docker_engine, extra
        self.stack = write_stack(user.project, docker_engine, services, extra)
        self.env = {
            **user.subprocess_env(),
            "DEVSECRETS_RUNTIME_DIR": str(runtime_dir),
            "COMPOSE_PROJECT_NAME": self.name,
        }
        self.proc = start_foreground_up(user.project, self.env, self.name, len(services), *args)
        self.out, self.err = Lines(self.proc.stdout), Lines(self.proc.stderr)

    def write_stack(self) -> None:
        self.stack = write_stack(self.user.project, self.image, self.stack["services"], self.extra)

    def containers(self, service: str | None = None) -> list[str]:
        return project_containers(self.name, service)

    def logs(self, service: str) -> list[str]:
        """Also while the service is stopped for a restart (restarts run in the background)."""
        ids = project_containers(self.name, service, stopped=True)
        if len(ids) != 1:
            return []  # being recreated
        (cid,) = ids
        out = subprocess.run(["docker", "logs", cid], capture_output=True, text=True, check=False)
        return out.stdout.splitlines()

    def exec(self, service: str, script: str) -> str:
        ids = self.containers(service)
        if len(ids) != 1:
            return ""  # being recreated
        (cid,) = ids
        return subprocess.run(
            ["docker", "exec", cid, "sh", "-c", script], capture_output=True, text=True, check=False
        ).stdout

    def wait(self, condition, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if self.proc.poll() is not None:
                raise AssertionError(f"devsecrets up exited: {self.err.text()}")
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.1)

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)
        compose_down(self.name, self.user.project)
        return self.err.text()


@pytest.fixture
def running(alice: User, runtime_dir: Path, docker_engine: str):
    started: list[Running] = []

    def start(*args, **kwargs) -> Running:
        started.append(
            Running(alice, *args, runtime_dir=runtime_dir, docker_engine=docker_engine, **kwargs)
        )
        return started[-1]

    yield start
    for run in started:
        run.stop()


def test_200_changes_are_never_torn_and_the_last_one_arrives(alice: User, running):
    # 64 KiB values, so a non-atomic write would have a real window to be seen half-done
    values = [bytes([65 + i % 26]) * 65536 + str(i).encode() for i in range(201)]
    alice.run("set", "x", input=values[0])
    run = running({"reader": {"command": ["sh", "-c", READER], "secrets": ["x"]}})
    valid = {md5(v) for v in values}
    for value in values[1:]:
        assert alice.run("set", "x", input=value).exit_code == 0
        time.sleep(0.04)  # past the watcher's quiet period: most writes become their own swap
    final = md5(values[-1])
    run.wait(
        lambda: run.logs("reader")[-1:] == [f"R {final}"], "the final value to arrive", timeout=30
    )
    reads = [line.split(" ", 1)[1] if " " in line else "" for line in run.logs("reader")]
    assert len(set(reads)) >= 50, (
        f"only {len(set(reads))} distinct values seen: too few swaps tested"
    )
    assert set(reads) <= valid, f"{len(set(reads) - valid)} reads were torn, empty or missing"
    err = run.stop()
    assert "x changed → reader" in err


def test_restart_and_signal_policies(alice: User, running):
    alice.run("set", "x", input=b"one")
    run = running(
        {
            "restarter": {"command": ["sh", "-c", "echo boot; exec sleep 600"], "secrets": ["x"]},
            "hupper": {
                "command": [
                    "sh",
                    "-c",
                    "trap 'echo got-hup' HUP; echo boot; while :; do sleep 0.1; done",
                ],
                "secrets": ["x"],
            },
            "bystander": {"command": ["sh", "-c", "echo boot; exec sleep 600"], "secrets": ["x"]},
        },
        extra={"x-devsecrets": {"on-change": {"restarter": "restart"}}},  # from the stack file
        args=("--on-change", "hupper=SIGHUP"),  # and from the command line
    )
    run.wait(lambda: run.logs("hupper") == ["boot"], "hupper to trap HUP")
    alice.run("set", "x", input=b"two")
    run.wait(lambda: "got-hup" in run.logs("hupper"), "SIGHUP to reach hupper")
    run.wait(lambda: run.logs("restarter").count("boot") == 2, "restarter to restart")
    assert run.exec("restarter", "cat /run/secrets/x") == "two"
    assert run.exec("bystander", "cat /run/secrets/x") == "two"
    assert run.logs("bystander") == ["boot"]  # policy none: the file changed under it, nothing else
    err = run.stop()
    assert (
        "x changed → bystander, hupper, restarter (restarted: restarter; SIGHUP sent: hupper)"
        in err
    )


def test_a_corrupt_file_keeps_the_last_good_value(alice: User, running):
    alice.run("set", "x", input=b"good")
    run = running({"app": {"command": ["sleep", "600"], "secrets": ["x"]}})
    store_file = alice.store / "x.sops.yaml"
    good_text = store_file.read_bytes()
    store_file.write_bytes(good_text[: len(good_text) // 2])  # a bad merge, a truncated pull
    run.err.wait_for("x: integrity check failed for")  # the watcher saw it and refused it
    assert run.exec("app", "cat /run/secrets/x") == "good"
    store_file.unlink()  # gone from the store altogether
    run.err.wait_for("x: no secret 'x'")
    assert run.exec("app", "cat /run/secrets/x") == "good"
    assert run.proc.poll() is None
    alice.run("set", "x", input=b"fixed")
    run.wait(lambda: run.exec("app", "cat /run/secrets/x") == "fixed", "the fixed value")
    err = run.stop()
    assert "x: integrity check failed for" in err and "still serving the last good value" in err
    assert "x: no secret 'x'" in err
    assert "good" not in err.replace("last good value", "")


def test_a_stack_edit_adds_a_grant_to_one_service_only(alice: User, running):
    alice.run("set", "x", input=b"x-value")
    alice.run("set", "y", input=b"y-value")
    run = running(
        {
            "a": {"command": ["sleep", "600"], "secrets": ["x"]},
            "b": {"command": ["sleep", "600"], "secrets": ["x"]},
        },
    )
    before = {s: run.containers(s) for s in ("a", "b")}
    run.stack["services"]["b"]["secrets"].append(
        {"source": "y", "target": "extra/y", "mode": 0o400}
    )
    run.write_stack()
    # a new grant is a service update: Swarm rolls out a new task for b, and a keeps its own
    run.wait(lambda: run.containers("b") not in ([], before["b"]), "b to be recreated")
    run.wait(lambda: run.exec("b", "cat /run/secrets/extra/y") == "y-value", "y to appear in b")
    assert run.exec("b", "stat -c %a /run/secrets/extra/y").strip() == "400"
    assert run.exec("a", "ls /run/secrets").split() == ["x"]
    assert run.containers("a") == before["a"]
    b_now = run.containers("b")

    # a new absolute target (a new mount): only that service is recreated
    run.stack["services"]["a"]["secrets"].append({"source": "y", "target": "/etc/app/y"})
    run.write_stack()
    run.wait(
        lambda: run.containers("a") != before["a"] and run.containers("a"), "a to be recreated"
    )
    run.wait(lambda: run.exec("a", "cat /etc/app/y") == "y-value", "y at its absolute target in a")
    assert run.containers("b") == b_now
    err = run.stop()
    assert "stack changed → b (recreated)" in err
    assert "stack changed → a (recreated)" in err


def test_watch_follows_a_detached_stack_and_leaves_it_running(
    alice: User, docker_engine: str, runtime_dir: Path
):
    alice.run("set", "x", input=b"one")
    name = project_name()
    write_stack(alice.project, docker_engine, {"app": {"secrets": ["x"]}})
    env = {
        **alice.subprocess_env(),
        "DEVSECRETS_RUNTIME_DIR": str(runtime_dir),
        "COMPOSE_PROJECT_NAME": name,
    }

    def app_reads() -> str:
        ids = project_containers(name)
        return subprocess.run(
            ["docker", "exec", ids[0], "cat", "/run/secrets/x"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout

    try:
        up = subprocess.run(
            [*devsecrets_cmd(), "up", "-d"],
            cwd=alice.project,
            env=env,
            capture_output=True,
            check=False,
        )
        assert up.returncode == 0, up.stderr.decode()
        assert f"run `devsecrets watch -p {name}`" in up.stderr.decode()  # the exact command
        alice.run("set", "x", input=b"two")  # while nobody watches: applied when watch starts
        watch = subprocess.Popen(
            [*devsecrets_cmd(), "watch"],
            cwd=alice.project,
            env=env,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        lines = Lines(watch.stderr)
        lines.wait_for("devsecrets: watching")  # caught up, and the observer runs
        assert app_reads() == "two"
        alice.run("set", "x", input=b"three")
        deadline = time.monotonic() + 60  # its own time: a loaded machine starts watch slowly
        while app_reads() != "three":
            assert time.monotonic() < deadline and watch.poll() is None, "watch missed a change"
            time.sleep(0.1)
        watch.send_signal(signal.SIGTERM)
        assert watch.wait(timeout=30) == 128 + signal.SIGTERM
        assert "x changed → app" in lines.text()
        assert app_reads() == "three"  # the stack keeps running, its secrets stay
        down = subprocess.run(
            [*devsecrets_cmd(), "down"],
            cwd=alice.project,
            env=env,
            capture_output=True,
            check=False,
        )
        assert down.returncode == 0
        assert not (runtime_dir / name).exists()
    finally:
        compose_down(name, alice.project)


def test_a_rotation_pulled_through_env_reaches_the_container(alice: User, running):
    """`name: db_password_${DB_VERSION}` and a .env bump (a teammate's rotation, pulled)."""
    alice.run("set", "db_password_v1", input=b"first")
    alice.run("set", "db_password_v2", input=b"second")
    (alice.project / ".env").write_text("DB_VERSION=v1\n")
    run = running(
        {"app": {"secrets": ["db_password"]}},
        extra={"secrets": {"db_password": {"external": True, "name": "db_password_${DB_VERSION}"}}},
    )
    assert run.exec("app", "cat /run/secrets/db_password") == "first"
    before = run.containers("app")
    (alice.project / ".env").write_text("DB_VERSION=v2\n")
    run.wait(
        lambda: run.exec("app", "cat /run/secrets/db_password") == "second", "the rotated value"
    )
    # a new versioned name is a new secret: as Swarm rolls out a new task, app is recreated
    run.wait(lambda: run.containers("app") not in ([], before), "app to be recreated")
    assert run.exec("app", "cat /run/secrets/db_password") == "second"
    assert "stack changed → app (recreated)" in run.stop()
