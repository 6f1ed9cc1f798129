"""Engine mode against a second Docker engine that cannot see this machine's tmpfs (as with
Docker Desktop, Colima or a remote host): `.ci/dockerd-isolated.sh` runs dockerd in its own
mount namespace with fresh tmpfs on /dev/shm and /run/user; DEVSECRETS_ISOLATED_DOCKER_HOST
points at it. The containers must see exactly what they see in host mode (which
test_swarm_parity compares with a real swarm), and the canary must reach neither that
engine's disk nor any argv or environment."""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from pathlib import Path

import pytest
from conftest import (
    IN_CI,
    PARITY_SECRETS,
    TEST_IMAGE,
    User,
    devsecrets,
    parity_values,
    probe_secrets,
    project_name,
    wait_for,
    write_stack,
)
from test_leak_audit import files_containing, processes_containing

from devsecrets import engine_mode
from devsecrets.errors import UsageProblem

ISOLATED = os.environ.get("DEVSECRETS_ISOLATED_DOCKER_HOST", "")
ISOLATED_STATE = os.environ.get("DEVSECRETS_ISOLATED_STATE", "/tmp/devsecrets-dockerd-isolated")
SCRIPT = Path(__file__).resolve().parent.parent / ".ci" / "dockerd-isolated.sh"


def _docker(host: str, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "DOCKER_HOST": host}
    return subprocess.run(["docker", *args], env=env, input=input, capture_output=True)


@pytest.fixture(scope="session")
def isolated(docker_engine: str) -> str:
    """The isolated engine answers and holds the test image."""
    reason = None
    if not ISOLATED:
        reason = "no isolated engine: run `bash .ci/dockerd-isolated.sh start` and export "
        reason += "DEVSECRETS_ISOLATED_DOCKER_HOST"
    elif _docker(ISOLATED, "image", "inspect", TEST_IMAGE).returncode != 0:
        reason = f"the isolated engine at {ISOLATED} does not answer or lacks {TEST_IMAGE}"
    if reason:
        if IN_CI:
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    return ISOLATED


def _env(user: User, host: str, runtime_dir: Path, **extra: str) -> dict[str, str]:
    return {
        **user.subprocess_env(),
        "DOCKER_HOST": host,
        "DEVSECRETS_RUNTIME_DIR": str(runtime_dir),
        "DEVSECRETS_HELPER_IMAGE": TEST_IMAGE,
        **extra,
    }


def _container(host: str, project: str, service: str, *, stopped: bool = False) -> str:
    out = _docker(
        host,
        "ps",
        "-q",
        *(["-a"] if stopped else []),
        "--filter",
        f"label=com.docker.compose.project={project}",
        "--filter",
        f"label=com.docker.compose.service={service}",
    )
    return out.stdout.decode().strip()


def _remove_project(host: str, project: str) -> None:
    ids = _docker(
        host, "ps", "-aq", "--filter", f"label=com.docker.compose.project={project}"
    ).stdout.split()
    ids += _docker(
        host, "ps", "-aq", "--filter", f"label=devsecrets.project={project}"
    ).stdout.split()
    if ids:
        _docker(host, "rm", "-f", *[i.decode() for i in ids])
    volumes = _volumes(host, project)
    if volumes:
        _docker(host, "volume", "rm", "-f", *volumes)


def _volumes(host: str, project: str) -> list[str]:
    """The project's secrets volumes (`devsecrets-<project>-secrets-<random>`)."""
    out = _docker(host, "volume", "ls", "-q", "--filter", f"label=devsecrets.project={project}")
    return out.stdout.decode().split()


def _probe(host: str, project: str) -> dict[str, list[str]]:
    seen = {}
    for service in ("api", "worker"):
        cid = _container(host, project, service)
        assert cid, f"{service} is not running"
        seen[service] = probe_secrets(cid, {**os.environ, "DOCKER_HOST": host})
    return seen


def _failing_docker(tmp_path: Path, answer: str, *, version: bool = False) -> Path:
    """A directory with a `docker` that prints `answer` on stderr and fails, as a probe
    container's `docker run` does on an engine that cannot bind this machine's files; with
    `version`, `docker version` answers (an engine is there)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    answers = '[ "$1" = version ] && { echo 28.0.0; exit 0; }\n' if version else ""
    docker.write_text(f"#!/bin/sh\n{answers}echo '{answer}' >&2\nexit 1\n")
    docker.chmod(0o755)
    return bin_dir


def _store(user: User, values: dict[str, bytes]) -> None:
    for name, value in values.items():
        assert user.run("set", name, input=value).exit_code == 0


def test_mode_detection_and_parity_with_host_mode(
    alice: User, isolated: str, runtime_dir: Path
) -> None:
    values = parity_values()
    _store(alice, values)
    write_stack(
        alice.project, TEST_IMAGE, {k: {"secrets": list(v)} for k, v in PARITY_SECRETS.items()}
    )
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    seen = {}
    for label, engine in (("host", host), ("engine", isolated)):
        project = project_name()
        env = _env(alice, engine, runtime_dir)
        files = ["-f", "docker-stack.yml", "-p", project]
        try:
            up = devsecrets(["up", *files, "-d"], cwd=alice.project, env=env)
            assert up.returncode == 0, up.stderr.decode()
            # the mode and why, in one line
            assert f"devsecrets: {label} mode: " in up.stderr.decode()
            seen[label] = _probe(engine, project)
            down = devsecrets(["down", *files, "-t", "0"], cwd=alice.project, env=env)
            assert down.returncode == 0, down.stderr.decode()
            # down removes the helper and its volume
            assert not _docker(
                engine, "ps", "-aq", "--filter", f"label=devsecrets.project={project}"
            ).stdout
            volumes = _docker(engine, "volume", "ls", "-q").stdout.decode().split()
            assert not [v for v in volumes if v.startswith(f"devsecrets-{project}-secrets")]
        finally:
            _remove_project(engine, project)

    assert seen["engine"] == seen["host"]
    api = {
        ln.split()[0]: ln.split()[1:] for ln in seen["engine"]["api"] if not ln.startswith("dir ")
    }
    worker = {
        ln.split()[0]: ln.split()[1:]
        for ln in seen["engine"]["worker"]
        if not ln.startswith("dir ")
    }
    # each service sees only its own
    assert set(api) == {"/run/secrets/db_password", "/run/secrets/token", "/etc/app/tls.key"}
    assert set(worker) == {"/run/secrets/db_password", "/run/secrets/nested/worker"}
    # exact owner and mode even though they are set inside the engine
    assert api["/etc/app/tls.key"][1:4] == ["400", "1000", "1001"]
    assert worker["/run/secrets/nested/worker"][1:4] == ["440", "33", "33"]
    assert all(v[1:4] == ["444", "0", "0"] for k, v in api.items() if k != "/etc/app/tls.key")
    assert all(v[-2:] == ["tmpfs", "ro"] for v in [*api.values(), *worker.values()])
    assert "dir /run/secrets 755 0 0" in seen["engine"]["api"]


def test_render_says_which_mode_and_forcing_works(
    alice: User, isolated: str, runtime_dir: Path
) -> None:
    _store(alice, {"db_password": b"x" * 8})
    write_stack(alice.project, TEST_IMAGE, {"api": {"secrets": ["db_password"]}})
    project = project_name()
    files = ["-f", "docker-stack.yml", "-p", project]
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        env = _env(alice, host, runtime_dir)
        out = devsecrets(["render", *files], cwd=alice.project, env=env)
        assert out.returncode == 0, out.stderr.decode()
        assert "devsecrets: host mode: the engine sees" in out.stderr.decode()
        forced = devsecrets(
            ["render", *files, "--engine-mode", "engine"], cwd=alice.project, env=env
        )
        assert forced.returncode == 0, forced.stderr.decode()
        assert "devsecrets: engine mode: forced by --engine-mode" in forced.stderr.decode()
        override = Path(forced.stdout.decode().strip()).read_text()
        assert f"/volumes/devsecrets-{project}-secrets-" in override
        assert "/_data/services/api/run-secrets" in override
        devsecrets(["down", *files], cwd=alice.project, env=env)
        by_env = devsecrets(
            ["render", *files], cwd=alice.project, env={**env, "DEVSECRETS_ENGINE_MODE": "host"}
        )
        assert "devsecrets: host mode: forced by DEVSECRETS_ENGINE_MODE" in by_env.stderr.decode()
        bad = devsecrets(
            ["render", *files], cwd=alice.project, env={**env, "DEVSECRETS_ENGINE_MODE": "vm"}
        )
        assert bad.returncode == 2
        assert bad.stderr.decode().startswith("devsecrets: error: DEVSECRETS_ENGINE_MODE=vm")
    finally:
        devsecrets(["down", *files], cwd=alice.project, env=_env(alice, host, runtime_dir))
        _remove_project(host, project)


def test_tcp_without_tls_is_refused_unless_forced() -> None:
    plain = {"DOCKER_HOST": "tcp://127.0.0.1:2375"}
    with pytest.raises(UsageProblem, match="TCP without TLS"):
        engine_mode.check_transport(plain, forced=False)
    engine_mode.check_transport(plain, forced=True)
    engine_mode.check_transport({**plain, "DOCKER_TLS_VERIFY": "1"}, forced=False)
    engine_mode.check_transport({"DOCKER_HOST": "ssh://me@box"}, forced=False)


def _data_root(host: str) -> Path:
    out = _docker(host, "info", "--format", "{{.DockerRootDir}}")
    return Path(out.stdout.decode().strip())


_wait = wait_for


def test_leak_audit_and_live_change(alice: User, isolated: str, runtime_dir: Path) -> None:
    canary = f"canary-engine-{secrets.token_hex(12)}".encode()
    second = f"canary-engine2-{secrets.token_hex(12)}".encode()
    _store(alice, {"db_password": canary})
    write_stack(alice.project, TEST_IMAGE, {"api": {"secrets": ["db_password"]}})
    project = project_name()
    files = ["-f", "docker-stack.yml", "-p", project]
    env = _env(alice, isolated, runtime_dir)
    root = _data_root(isolated)
    watch = None
    try:
        up = devsecrets(["up", *files, "-d"], cwd=alice.project, env=env)
        assert up.returncode == 0, up.stderr.decode()
        cid = _container(isolated, project, "api")
        assert _docker(isolated, "exec", cid, "cat", "/run/secrets/db_password").stdout == canary
        assert files_containing(canary, [root]) == []  # not on the engine's disk
        assert files_containing(canary, [runtime_dir]) == []  # nor in the client's dir
        assert processes_containing(canary) == []  # no argv, no environment
        watch = subprocess.Popen(
            [*_devsecrets_cmd(), "watch", *files],
            cwd=alice.project,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        _wait(lambda: b"watching" in _peek(watch), "the watch to start", timeout=120)
        changed = devsecrets(["set", "db_password"], cwd=alice.project, env=env, input=second)
        assert changed.returncode == 0, changed.stderr.decode()
        _wait(
            lambda: (
                _docker(isolated, "exec", cid, "cat", "/run/secrets/db_password").stdout == second
            ),
            "the live change inside the running container",
            timeout=120,
        )
        assert b"db_password changed" in _peek(watch)
        for needle in (canary, second):
            assert files_containing(needle, [root]) == []
            assert processes_containing(needle) == []
    finally:
        if watch is not None:
            watch.terminate()
            _, err = watch.communicate(timeout=30)
            err = _peek_seen(watch) + err
            assert canary not in err and second not in err, "a value in the watch's output"
        down = devsecrets(["down", *files, "-t", "0"], cwd=alice.project, env=env)
        _remove_project(isolated, project)
    assert down.returncode == 0, down.stderr.decode()
    for needle in (canary, second):
        assert files_containing(needle, [root, runtime_dir]) == []
        assert processes_containing(needle) == []
        assert needle not in up.stdout + up.stderr + down.stdout + down.stderr


def _peek(proc: subprocess.Popen) -> bytes:
    """What a child wrote to stderr so far (without waiting for it to end)."""
    import fcntl

    fd = proc.stderr.fileno()
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
    try:
        chunk = os.read(fd, 65536)
    except BlockingIOError:
        chunk = b""
    proc.seen = getattr(proc, "seen", b"") + chunk
    return proc.seen


def _peek_seen(proc: subprocess.Popen) -> bytes:
    return getattr(proc, "seen", b"")


def _devsecrets_cmd() -> list[str]:
    from conftest import devsecrets_cmd

    return devsecrets_cmd()


def test_engine_restart_does_not_start_the_service_without_its_secrets(
    alice: User, isolated: str, runtime_dir: Path
) -> None:
    # this test stops and starts the engine at ISOLATED_STATE: only if that is the engine
    # the tests were given, never another one that happens to run at the default path
    reason = None
    if isolated != f"unix://{ISOLATED_STATE}/docker.sock":
        reason = f"DEVSECRETS_ISOLATED_STATE ({ISOLATED_STATE}) is not the state of {isolated}"
    elif not os.path.exists(os.path.join(ISOLATED_STATE, "dockerd.pid")):
        reason = (
            f"the isolated engine's state is not at {ISOLATED_STATE} (DEVSECRETS_ISOLATED_STATE)"
        )
    if reason:
        if IN_CI:
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    _store(alice, {"db_password": b"canary-" + secrets.token_hex(8).encode()})
    write_stack(
        alice.project,
        TEST_IMAGE,
        {"api": {"secrets": ["db_password"], "restart": "always"}},
    )
    project = project_name()
    files = ["-f", "docker-stack.yml", "-p", project]
    env = _env(alice, isolated, runtime_dir)
    script_env = {**os.environ, "DEVSECRETS_ISOLATED_STATE": ISOLATED_STATE}
    try:
        up = devsecrets(["up", *files, "-d"], cwd=alice.project, env=env)
        assert up.returncode == 0, up.stderr.decode()
        subprocess.run(["bash", str(SCRIPT), "stop"], env=script_env, check=True)
        _wait(lambda: not os.path.exists(os.path.join(ISOLATED_STATE, "dockerd.pid")), "stop")
        subprocess.run(
            ["bash", str(SCRIPT), "start"], env=script_env, check=True, capture_output=True
        )
        time.sleep(3)  # the engine's own restart of `restart: always` containers
        cid = _container(isolated, project, "api", stopped=True)
        assert cid
        running = _docker(isolated, "inspect", "--format", "{{.State.Running}}", cid)
        assert running.stdout.decode().strip() == "false"
        start = _docker(isolated, "start", cid)
        assert start.returncode != 0
        # the directory inside the volume exists only while its tmpfs is mounted and filled
        assert (
            b"no such file or directory" in start.stderr
            or b"bind source path does not exist" in start.stderr
        )
        # up again brings it back with its secrets
        again = devsecrets(["up", *files, "-d"], cwd=alice.project, env=env)
        assert again.returncode == 0, again.stderr.decode()
        cid = _wait(lambda: _container(isolated, project, "api"), "api after up")
        assert _docker(isolated, "exec", cid, "cat", "/run/secrets/db_password").stdout.startswith(
            b"canary-"
        )
    finally:
        devsecrets(["down", *files, "-t", "0"], cwd=alice.project, env=env)
        _remove_project(isolated, project)


READER = (
    'last=""; while :; do d=$$(md5sum < /run/secrets/x | cut -c1-32); '
    'if [ "$$d" != "$$last" ]; then echo "R $$d"; last=$$d; fi; done'
)


def test_200_live_changes_in_the_engine_are_never_torn(
    alice: User, isolated: str, runtime_dir: Path
) -> None:
    import hashlib

    def md5(data: bytes) -> str:
        return hashlib.md5(data).hexdigest()  # noqa: S324 - a fingerprint, not security

    # 64 KiB values, so a non-atomic write would have a real window to be seen half-done
    values = [bytes([65 + i % 26]) * 65536 + str(i).encode() for i in range(201)]
    assert alice.run("set", "x", input=values[0]).exit_code == 0
    write_stack(
        alice.project, TEST_IMAGE, {"reader": {"command": ["sh", "-c", READER], "secrets": ["x"]}}
    )
    project = project_name()
    env = _env(alice, isolated, runtime_dir, COMPOSE_PROJECT_NAME=project)
    up = subprocess.Popen(
        [*_devsecrets_cmd(), "up"],
        cwd=alice.project,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    try:
        cid = _wait(lambda: _container(isolated, project, "reader"), "reader", timeout=120)

        def reads() -> list[str]:
            out = _docker(isolated, "logs", cid).stdout.decode().splitlines()
            return [line.split(" ", 1)[1] if " " in line else "" for line in out]

        for value in values[1:]:
            assert alice.run("set", "x", input=value).exit_code == 0
            time.sleep(0.04)
        final = md5(values[-1])
        _wait(lambda: reads()[-1:] == [final], "the final value to arrive", timeout=60)
        seen = set(reads())
        assert len(seen) >= 20, f"only {len(seen)} distinct values seen: too few swaps tested"
        assert seen <= {md5(v) for v in values}, f"{len(seen)} reads: some torn, empty or missing"
    finally:
        if up.poll() is None:
            up.terminate()
        _, err = up.communicate(timeout=60)
        left = _docker(isolated, "ps", "-aq", "--filter", f"label=devsecrets.project={project}")
        _remove_project(isolated, project)
    assert b"x changed" in err
    # the foreground up removed its helper (and with it the values) when it ended
    assert not left.stdout.strip()


@pytest.mark.parametrize(
    ("answer", "mode", "why"),
    [
        ("Error response from daemon: No such image: devsecrets-probe-x:absent", "host", "sees"),
        (
            'Error response from daemon: invalid mount config for type "bind": bind source path '
            "does not exist: /dev/shm/x",
            "engine",
            "cannot see",
        ),
        (
            "Error response from daemon: Mounts denied: The path /dev/shm/x is not shared",
            "engine",
            "cannot see",
        ),
        ("Error: something new", "engine", "unexpected answer (Error: something new)"),
    ],
)
def test_the_probe_reads_the_engines_answer(
    tmp_path: Path, answer: str, mode: str, why: str
) -> None:
    bin_dir = _failing_docker(tmp_path, answer, version=True)
    root = tmp_path / "runtime"
    root.mkdir()
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "DOCKER_HOST": "unix:///nowhere.sock"}
    choice = engine_mode.choose(None, env, root)
    assert choice.mode == mode
    assert why in choice.reason
    assert list(root.iterdir()) == []  # the marker directory is gone again


def test_no_engine_answering_the_probe_is_one_error(tmp_path: Path) -> None:
    from devsecrets.errors import ComposeError

    bin_dir = _failing_docker(tmp_path, "Cannot connect to the Docker daemon")
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "DOCKER_HOST": "unix:///nowhere.sock"}
    with pytest.raises(ComposeError, match="no Docker engine answers"):
        engine_mode.choose(None, env, tmp_path)


@pytest.mark.parametrize(
    ("answer", "line"),
    [
        ("failed to connect to the docker API at unix:///x.sock", "no Docker engine answers ("),
        (
            'Failed to initialize: unable to resolve docker endpoint: context "nope": not found',
            "no Docker engine answers (",
        ),
        (
            "permission denied while trying to connect to the Docker daemon socket at unix:///s",
            "no Docker engine answers to this user",
        ),
    ],
)
def test_the_probe_tells_an_engine_that_cannot_be_reached(
    tmp_path: Path, answer: str, line: str
) -> None:
    """`up` runs no separate engine check when it probes: the probe's answer must say it."""
    from devsecrets.errors import ComposeError

    env = {"PATH": f"{_failing_docker(tmp_path, answer)}:/usr/bin:/bin"}
    with pytest.raises(ComposeError) as raised:
        engine_mode.choose(None, env, tmp_path)
    assert str(raised.value).startswith(line)


def test_an_odd_probe_answer_from_no_engine_is_not_taken_for_engine_mode(tmp_path: Path) -> None:
    """The probe is the engine check in automatic mode: an answer it does not know is
    checked with `docker version` before engine mode is chosen."""
    from devsecrets.errors import ComposeError

    env = {"PATH": f"{_failing_docker(tmp_path, 'client version 1.12 is too old')}:/usr/bin:/bin"}
    with pytest.raises(ComposeError, match="no Docker engine answers"):
        engine_mode.choose(None, env, tmp_path)


def test_engine_mode_over_plain_tcp_is_refused_when_chosen_automatically(tmp_path: Path) -> None:
    bin_dir = _failing_docker(tmp_path, "bind source path does not exist: /x")
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "DOCKER_HOST": "tcp://127.0.0.1:2375"}
    with pytest.raises(UsageProblem, match="TCP without TLS"):
        engine_mode.choose(None, env, tmp_path)
    assert engine_mode.choose("engine", env, tmp_path).mode == "engine"  # forced
