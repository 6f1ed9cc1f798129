"""Engine mode's store on the isolated engine (see test_engine_mode.py): what is removed and
what is kept when files, runtime directories and clients come and go, and values that grow
beyond the size the tmpfs volume was made with."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import (
    TEST_IMAGE,
    User,
    devsecrets,
    devsecrets_cmd,
    project_name,
    wait_for,
    write_stack,
)
from test_engine_mode import (
    _container,
    _docker,
    _env,
    _remove_project,
    _volumes,
    isolated,
)

__all__ = ["isolated"]  # the fixture, imported to be used here


def _one_secret_stack(user: User) -> tuple[bytes, str, list[str]]:
    """`api` with `db_password` (a fresh canary) in the user's project: (the value, a fresh
    project name, the compose flags naming both)."""
    value = b"canary-" + secrets.token_hex(8).encode()
    assert user.run("set", "db_password", input=value).exit_code == 0
    write_stack(user.project, TEST_IMAGE, {"api": {"secrets": ["db_password"]}})
    project = project_name()
    return value, project, ["-f", "docker-stack.yml", "-p", project]


def _helper_files(host: str, project: str, service: str) -> list[str]:
    """The names in a service's run-secrets directory, read inside the helper, one per NUL."""
    out = _docker(
        host,
        "exec",
        f"devsecrets-{project}-helper",
        "find",
        f"/devsecrets/services/{service}/run-secrets",
        "-type",
        "f",
        "-print0",
    )
    assert out.returncode == 0, out.stderr.decode()
    prefix = f"/devsecrets/services/{service}/run-secrets/"
    return sorted(p.decode()[len(prefix) :] for p in out.stdout.split(b"\0") if p)


def test_file_names_with_spaces_quotes_and_newlines_are_kept_and_removed_whole(
    alice: User, isolated: str, runtime_dir: Path
) -> None:
    odd = {"my token": b"space-" * 4, "it's": b"quote-" * 4, "two\nlines": b"newline-" * 4}
    for i, value in enumerate(odd.values()):
        assert alice.run("set", f"s{i}", input=value).exit_code == 0
    assert alice.run("set", "plain", input=b"plain-value").exit_code == 0
    refs = [{"source": f"s{i}", "target": name} for i, name in enumerate(odd)]
    project = project_name()
    files = ["-f", "docker-stack.yml", "-p", project]
    env = _env(alice, isolated, runtime_dir)
    try:
        write_stack(alice.project, TEST_IMAGE, {"api": {"secrets": ["plain", *refs]}})
        up = devsecrets(["up", *files, "-d"], cwd=alice.project, env=env)
        assert up.returncode == 0, up.stderr.decode()
        cid = _container(isolated, project, "api")
        for name, value in odd.items():  # every one written, none removed as another's part
            seen = _docker(isolated, "exec", cid, "cat", f"/run/secrets/{name}")
            assert seen.stdout == value, f"{name!r}: {seen.stderr.decode()}"
        assert _helper_files(isolated, project, "api") == sorted([*odd, "plain"])

        # the stack drops two of them: exactly those two go, the others stay
        write_stack(alice.project, TEST_IMAGE, {"api": {"secrets": ["plain", refs[1]]}})
        again = devsecrets(["up", *files, "-d"], cwd=alice.project, env=env)
        assert again.returncode == 0, again.stderr.decode()
        assert _helper_files(isolated, project, "api") == ["it's", "plain"]
        cid = _container(isolated, project, "api")
        assert _docker(isolated, "exec", cid, "cat", "/run/secrets/it's").stdout == odd["it's"]
    finally:
        devsecrets(["down", *files, "-t", "0"], cwd=alice.project, env=env)
        _remove_project(isolated, project)


def _helpers(host: str, project: str) -> list[str]:
    out = _docker(host, "ps", "-aq", "--filter", f"label=devsecrets.project={project}")
    return out.stdout.decode().split()


def test_helpers_whose_runtime_directory_is_gone_are_swept_only_when_ours_and_unused(
    alice: User, isolated: str, runtime_dir: Path, tmp_path: Path
) -> None:
    assert (
        alice.run("set", "db_password", input=b"canary-" + secrets.token_hex(8).encode()).exit_code
        == 0
    )
    write_stack(alice.project, TEST_IMAGE, {"api": {"secrets": ["db_password"]}})
    other_root = Path("/dev/shm") / f"devsecrets-test-other-{secrets.token_hex(4)}"
    gone, running, others, current = (project_name() for _ in range(4))
    roots = {gone: runtime_dir, running: runtime_dir, others: other_root, current: runtime_dir}
    try:
        for project, root in roots.items():
            if project == current:
                continue
            env = _env(alice, isolated, root)
            up = devsecrets(["up", "-p", project, "-d"], cwd=alice.project, env=env)
            assert up.returncode == 0, up.stderr.decode()
            assert _helpers(isolated, project) and _volumes(isolated, project)
            # this machine restarted: its runtime directory is gone, the engine kept the rest
            shutil.rmtree(root / project)
        for project in (gone, others):  # their services are gone too
            ids = _docker(
                isolated, "ps", "-aq", "--filter", f"label=com.docker.compose.project={project}"
            ).stdout.split()
            _docker(isolated, "rm", "-f", *[i.decode() for i in ids])

        env = _env(alice, isolated, runtime_dir)
        up = devsecrets(["up", "-p", current, "-d"], cwd=alice.project, env=env)
        assert up.returncode == 0, up.stderr.decode()
        assert not _helpers(isolated, gone) and not _volumes(isolated, gone)  # swept
        assert _helpers(isolated, running) and _volumes(isolated, running)  # services run
        assert _helpers(isolated, others) and _volumes(isolated, others)  # another client's

        # `down` of a project whose runtime directory is gone removes its helper and volume
        down = devsecrets(["down", "-p", running, "-t", "0"], cwd=alice.project, env=env)
        assert down.returncode == 0, down.stderr.decode()
        assert not _helpers(isolated, running) and not _volumes(isolated, running)
        assert not _docker(
            isolated, "ps", "-aq", "--filter", f"label=com.docker.compose.project={running}"
        ).stdout.strip()
    finally:
        for project, root in roots.items():
            devsecrets(
                ["down", "-p", project, "-t", "0"],
                cwd=alice.project,
                env=_env(alice, isolated, root),
            )
            _remove_project(isolated, project)
        shutil.rmtree(other_root, ignore_errors=True)


def _size(host: str, project: str) -> int:
    out = _docker(
        host,
        "inspect",
        "--format",
        '{{index .Config.Labels "devsecrets.size"}}',
        f"devsecrets-{project}-helper",
    )
    return int(out.stdout.decode().strip())


def test_a_value_that_outgrows_the_volume_is_one_line_live_and_a_bigger_volume_at_up(
    alice: User, isolated: str, runtime_dir: Path
) -> None:
    assert alice.run("set", "blob", input=b"small").exit_code == 0
    # one secret at 24 targets: values are capped at 500 KiB (as in Swarm), so it is the
    # number of copies that outgrows the volume's 16 MiB floor
    targets = [{"source": "blob", "target": f"copy{i}"} for i in range(24)]
    write_stack(alice.project, TEST_IMAGE, {"api": {"secrets": targets}})
    project = project_name()
    files = ["-f", "docker-stack.yml", "-p", project]
    env = _env(alice, isolated, runtime_dir)
    watch = None
    try:
        up = devsecrets(["up", *files, "-d"], cwd=alice.project, env=env)
        assert up.returncode == 0, up.stderr.decode()
        size = _size(isolated, project)
        first_volume = _volumes(isolated, project)
        watch = subprocess.Popen(
            [*devsecrets_cmd(), "watch", *files],
            cwd=alice.project,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert watch.stderr is not None
        while "watching" not in watch.stderr.readline():
            assert watch.poll() is None, "watch ended"
        big = secrets.token_bytes(size // 2 // 24 + 4096)  # with staged copies: too much
        assert alice.run("set", "blob", input=big).exit_code == 0
        deadline = time.monotonic() + 120
        line = ""
        while "error" not in line and time.monotonic() < deadline:
            line = watch.stderr.readline()
        assert "engine mode: the secrets need" in line, line
        assert "run `devsecrets up` again" in line
        cid = _container(isolated, project, "api")
        kept = _docker(isolated, "exec", cid, "cat", "/run/secrets/copy7")
        assert kept.stdout == b"small"  # the last good value, not a partial one
        watch.terminate()
        watch.wait(timeout=60)

        again = devsecrets(["up", *files, "-d"], cwd=alice.project, env=env)
        assert again.returncode == 0, again.stderr.decode()
        assert _size(isolated, project) > size
        assert _volumes(isolated, project) != first_volume  # a new one, the old one removed
        assert len(_volumes(isolated, project)) == 1
        cid = _container(isolated, project, "api")  # recreated on the new volume
        digest = _docker(isolated, "exec", cid, "sha256sum", "/run/secrets/copy23").stdout
        assert digest.split()[0].decode() == hashlib.sha256(big).hexdigest()
    finally:
        if watch is not None and watch.poll() is None:
            watch.kill()
            watch.wait()
        devsecrets(["down", *files, "-t", "0"], cwd=alice.project, env=env)
        _remove_project(isolated, project)


def _channels(helper: str) -> list[int]:
    """Pids of the docker clients attached to HELPER's write loop: `docker exec -i HELPER sh
    -c <the loop>`, or the helper's own attached start (`docker start -a -i HELPER`, or
    `docker run` with the loop) kept as the first channel."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[:1] and argv[0].endswith(b"docker") and helper.encode() in argv:
            attached_start = argv[1:4] == [b"start", b"-a", b"-i"]
            if attached_start or any(b"while read -r slen tlen" in a for a in argv):
                found.append(int(entry.name))
    return found


def test_live_writes_go_through_one_kept_exec_and_survive_its_loss(
    alice: User, isolated: str, runtime_dir: Path
) -> None:
    assert alice.run("set", "x", input=b"value-0").exit_code == 0
    write_stack(alice.project, TEST_IMAGE, {"api": {"secrets": ["x"]}})
    project = project_name()
    env = _env(alice, isolated, runtime_dir, COMPOSE_PROJECT_NAME=project)
    up = subprocess.Popen(
        [*devsecrets_cmd(), "up"],
        cwd=alice.project,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    helper = f"devsecrets-{project}-helper"

    def change(i: int) -> None:
        value = f"value-{i}".encode()
        assert alice.run("set", "x", input=value).exit_code == 0
        cid = wait_for(lambda: _container(isolated, project, "api"), "api")
        wait_for(
            lambda: _docker(isolated, "exec", cid, "cat", "/run/secrets/x").stdout == value,
            f"value {i} in the container",
        )

    try:
        wait_for(lambda: _container(isolated, project, "api"), "api", timeout=120)
        change(1)  # the first live write: one `docker exec`, then the channel opens
        change(2)
        kept = wait_for(lambda: _channels(helper), "the kept exec")
        assert len(kept) == 1
        for i in range(3, 6):
            change(i)
        assert _channels(helper) == kept  # the same one carried them
        os.kill(kept[0], signal.SIGKILL)  # lost: the next write goes by `docker exec`
        change(6)
        change(7)
    finally:
        up.terminate()
        _, err = up.communicate(timeout=60)
        _remove_project(isolated, project)
    assert b"x changed" in err
    assert not _channels(helper)  # gone with the helper


LOOP_FAILS = b"exit 3\n"  # a script that fails before it reads its tar


def test_the_write_loop_stops_at_a_failure_and_never_runs_what_follows(tmp_path: Path) -> None:
    """The loop alone (busybox sh, no engine): after a failed message, bytes that would form
    a valid next message (here, the unread tar of the failed one) are not run."""
    from devsecrets import engine_store

    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.skip("busybox is not installed")
    marker = tmp_path / "ran"
    follows = f"touch {marker}\n".encode()
    stream = (
        f"{len(LOOP_FAILS)} {len(follows) + 16}\n".encode()
        + LOOP_FAILS
        + f"{len(follows)} 1\n".encode()
        + follows
        + b"x"
    )
    out = subprocess.run(
        [busybox, "sh", "-c", engine_store._LOOP], input=stream, capture_output=True, timeout=30
    )
    assert out.stdout.startswith(b"fail"), out
    assert not marker.exists(), "the loop ran bytes after a failed message"
    # and a good message is answered "ok"
    good = f"touch {marker}".encode()
    out = subprocess.run(
        [busybox, "sh", "-c", engine_store._LOOP],
        input=f"{len(good)} 0\n".encode() + good,
        capture_output=True,
        timeout=30,
    )
    assert out.stdout == b"ok\n" and marker.exists(), out


def _hint(root: Path, host: str, mode: str) -> None:
    """What the last probe said for the engine at `host` (the head start's guess)."""
    (root / ".engine-mode.json").write_text(json.dumps({f"host:{host}": mode}))


def test_a_head_start_on_a_wrong_guess_or_a_failed_command_leaves_no_helper(
    alice: User, isolated: str, runtime_dir: Path
) -> None:
    _, project, files = _one_secret_stack(alice)
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    for engine in (host, isolated):
        env = _env(alice, engine, runtime_dir)
        try:
            # a first run caches compose's config (the project's name, known early next time)
            out = devsecrets(["render", *files], cwd=alice.project, env=env)
            assert out.returncode == 0, out.stderr.decode()
            devsecrets(["down", *files], cwd=alice.project, env=env)
            assert not _helpers(engine, project) and not _volumes(engine, project)
            _hint(runtime_dir, engine, "engine")  # wrong for the first engine
            if engine == host:  # host mode after all: the early helper is removed
                up = devsecrets(["up", *files, "-d"], cwd=alice.project, env=env)
                assert up.returncode == 0, up.stderr.decode()
                assert "devsecrets: host mode: the engine sees" in up.stderr.decode()
            else:  # the command fails before the helper is taken: removed too
                assert alice.run("rm", "db_password").exit_code == 0
                up = devsecrets(["up", *files, "-d"], cwd=alice.project, env=env)
                assert up.returncode == 1, up.stderr.decode()
                assert "db_password" in up.stderr.decode()
            assert not _helpers(engine, project) and not _volumes(engine, project)
        finally:
            devsecrets(["down", *files, "-t", "0"], cwd=alice.project, env=env)
            _remove_project(engine, project)


def test_a_wrong_guess_of_where_the_engine_keeps_volumes_is_corrected(
    alice: User, isolated: str, runtime_dir: Path
) -> None:
    value, project, files = _one_secret_stack(alice)
    env = _env(alice, isolated, runtime_dir)
    try:
        first = devsecrets(["render", *files], cwd=alice.project, env=env)  # learns it
        assert first.returncode == 0, first.stderr.decode()
        assert devsecrets(["down", *files], cwd=alice.project, env=env).returncode == 0
        hints = json.loads((runtime_dir / ".engine-mode.json").read_text())
        assert hints[f"volumes host:{isolated}"].endswith("/volumes")
        hints[f"volumes host:{isolated}"] = "/nowhere/volumes"
        (runtime_dir / ".engine-mode.json").write_text(json.dumps(hints))
        up = devsecrets(["up", *files, "-d"], cwd=alice.project, env=env)
        assert up.returncode == 0, up.stderr.decode()
        cid = _container(isolated, project, "api")
        assert _docker(isolated, "exec", cid, "cat", "/run/secrets/db_password").stdout == value
        hints = json.loads((runtime_dir / ".engine-mode.json").read_text())
        assert hints[f"volumes host:{isolated}"].endswith("/volumes")  # learnt
        assert hints[f"volumes host:{isolated}"] != "/nowhere/volumes"
    finally:
        devsecrets(["down", *files, "-t", "0"], cwd=alice.project, env=env)
        _remove_project(isolated, project)


@pytest.mark.parametrize("head_start", [True, False], ids=["head-start", "no-head-start"])
def test_a_helper_left_by_a_lost_client_state_is_replaced_with_its_volume(
    alice: User, isolated: str, runtime_dir: Path, head_start: bool
) -> None:
    """The client's state is gone (a reboot cleared its tmpfs, a crash) while the engine kept
    the project's helper and volume: `up` meets the helper by its name, replaces it, and
    removes the old volume, which only the old helper held."""
    value, project, files = _one_secret_stack(alice)
    env = _env(alice, isolated, runtime_dir)
    if not head_start:  # the head start needs the cached config: a fresh root has none
        env["DEVSECRETS_ENGINE_MODE"] = "engine"
    try:
        up = devsecrets(["up", *files, "-d"], cwd=alice.project, env=env)
        assert up.returncode == 0, up.stderr.decode()
        (old_volume,) = _volumes(isolated, project)
        devsecrets_down = _docker(isolated, "rm", "-f", _container(isolated, project, "api"))
        assert devsecrets_down.returncode == 0
        _docker(isolated, "stop", "-t", "0", f"devsecrets-{project}-helper")
        shutil.rmtree(runtime_dir / project)  # the client's state is gone
        if not head_start:
            shutil.rmtree(runtime_dir)
        again = devsecrets(["up", *files, "-d"], cwd=alice.project, env=env)
        assert again.returncode == 0, again.stderr.decode()
        (new_volume,) = _volumes(isolated, project)
        assert new_volume != old_volume
        cid = _container(isolated, project, "api")
        assert _docker(isolated, "exec", cid, "cat", "/run/secrets/db_password").stdout == value
    finally:
        devsecrets(["down", *files, "-t", "0"], cwd=alice.project, env=env)
        _remove_project(isolated, project)


def _attached_clients(project: str) -> list[str]:
    """pids of docker clients attached to the project's helper, on this machine: its
    `docker start -a -i` (created through the API) or its `docker run -i`."""
    helper = f"devsecrets-{project}-helper"
    out = subprocess.run(
        ["pgrep", "-f", f"docker (start -a -i|run -i --sig-proxy=false --name) {helper}"],
        capture_output=True,
        text=True,
    )
    return out.stdout.split()


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM, signal.SIGHUP])
def test_an_up_ended_while_its_helper_starts_leaves_no_attached_client(
    alice: User, isolated: str, runtime_dir: Path, signum: int
) -> None:
    """The helper's `docker run` client stays attached until the first values are in. If
    `up -d` ends meanwhile (SIGKILL: no cleanup runs; a stop signal, possibly before the
    plaintext guard), that client must not stay behind, attached to the helper forever."""
    _, project, files = _one_secret_stack(alice)
    env = _env(alice, isolated, runtime_dir, DEVSECRETS_ENGINE_MODE="engine")
    try:
        up = subprocess.Popen(
            [*devsecrets_cmd(), "up", *files, "-d"],
            cwd=alice.project,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # the helper runs and its client is still attached: compose's own `up` is under way
        helper = f"devsecrets-{project}-helper"
        wait_for(
            lambda: (
                up.poll() is not None
                or (_attached_clients(project) and _docker(isolated, "top", helper).returncode == 0)
            ),
            "the helper running",
            60,
            0.02,
        )
        assert up.poll() is None, "up -d ended before the helper ran"
        up.send_signal(signum)
        up.wait(timeout=60)
        wait_for(lambda: not _attached_clients(project), "no attached client", 3)
    finally:
        devsecrets(["down", *files, "-t", "0"], cwd=alice.project, env=env)
        _remove_project(isolated, project)


@pytest.mark.parametrize("head_start", [True, False], ids=["head-start", "no-head-start"])
def test_a_foreign_container_with_the_helpers_name_is_left_alone(
    alice: User, isolated: str, runtime_dir: Path, head_start: bool
) -> None:
    """A name conflict replaces only a devsecrets helper of this project; a container of
    someone else's that happens to have the name is refused, in one line, and kept: also when
    the head start's helper is the one that met it."""
    _, project, files = _one_secret_stack(alice)
    env = _env(alice, isolated, runtime_dir)
    if head_start:  # the head start needs the cached config and this engine's last answer
        for args in (["render", *files], ["down", *files, "-t", "0"]):
            assert devsecrets(args, cwd=alice.project, env=env).returncode == 0
    else:
        env["DEVSECRETS_ENGINE_MODE"] = "engine"
    name = f"devsecrets-{project}-helper"
    made = _docker(isolated, "create", "--name", name, "--network", "none", TEST_IMAGE, "true")
    assert made.returncode == 0, made.stderr.decode()
    try:
        up = devsecrets(["up", *files, "-d"], cwd=alice.project, env=env)
        assert up.returncode == 1
        lines = up.stderr.decode().splitlines()
        assert lines[0] == (
            f"devsecrets: error: engine mode: a container named {name} exists and is not "
            "this project's devsecrets helper"
        ), lines
        assert _docker(isolated, "inspect", "--format", "{{.Name}}", name).returncode == 0
        assert not _attached_clients(project)
    finally:
        _docker(isolated, "rm", "-f", name)
        devsecrets(["down", *files, "-t", "0"], cwd=alice.project, env=env)
        _remove_project(isolated, project)


def test_a_write_the_engine_does_not_take_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A tar larger than the pipe, to a loop that never reads (a stalled engine): the write
    gives up at the timeout instead of blocking for ever."""
    from devsecrets import engine_store

    monkeypatch.setattr(engine_store, "_TIMEOUT", 0.5)
    stalled = subprocess.Popen(
        ["sleep", "20"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        began = time.monotonic()
        assert engine_store._message(stalled, ":", b"x" * (4 << 20)) is None
        assert time.monotonic() - began < 5
    finally:
        stalled.kill()
        stalled.communicate()


@pytest.mark.parametrize(
    ("stderr", "line"),
    [
        (
            "Unable to find image 'r:9/x:1' locally\ndocker: Error response from daemon: "
            "Get \"https://r:9/v2/\": connection refused\nRun 'docker run --help' for more",
            'docker: Error response from daemon: Get "https://r:9/v2/": connection refused',
        ),
        ("WARNING: something\nthe cause\n", "the cause"),
        ("", ""),
    ],
)
def test_a_failed_docker_run_is_named_by_its_cause(stderr: str, line: str) -> None:
    from devsecrets.engine_store import _docker_error

    assert _docker_error(stderr) == line


def test_a_compose_let_through_without_the_real_override_starts_no_service(
    alice: User, isolated: str, runtime_dir: Path
) -> None:
    """compose_gate's promise when devsecrets dies before the release (compose reads an empty
    gate): the pending override it read fails every service with secrets, also over values
    already in the volume (a re-run), so none runs without devsecrets having sent the real
    binds. Simulated here by running compose with the pending override and nothing after."""
    _, project, files = _one_secret_stack(alice)
    env = _env(alice, isolated, runtime_dir)
    try:
        up = devsecrets(["up", *files, "-d"], cwd=alice.project, env=env)
        assert up.returncode == 0, up.stderr.decode()
        before = _container(isolated, project, "api")
        pending = runtime_dir / project / "override-pending.yml"
        assert pending.is_file()
        let_through = subprocess.run(
            ["docker", "compose", *files, "-f", str(pending), "up", "-d"],
            cwd=alice.project,
            env=env,
            capture_output=True,
        )
        assert let_through.returncode != 0
        assert b"bind source path does not exist" in let_through.stderr
        # compose makes the new container before it stops the old one: the old one, with
        # the binds devsecrets sent, is all that runs
        assert _container(isolated, project, "api") == before
        mounts = _docker(isolated, "inspect", "--format", "{{json .Mounts}}", before).stdout
        assert b".unreleased" not in mounts and b"run-secrets" in mounts
        # the real binds cut short by our death (even where the path names a directory that
        # exists): not a document, compose refuses to load it; whole, it is the real override
        (real,) = [m["Source"] for m in json.loads(mounts) if m["Destination"] == "/run/secrets"]
        bind = {"type": "bind", "source": real, "target": "/run/secrets", "read_only": True}
        whole = json.dumps({"services": {"api": {"volumes": [bind]}}})
        cut = whole[: whole.index("/_data") + len("/_data")]
        for gate, loads in ((cut, False), (whole, True)):
            (runtime_dir / project / "gate.json").write_text(gate)
            config = subprocess.run(
                ["docker", "compose", *files, "-f", str(pending)]
                + ["-f", str(runtime_dir / project / "gate.json"), "config", "--format", "json"],
                cwd=alice.project,
                env=env,
                capture_output=True,
            )
            assert (config.returncode == 0) is loads, config.stderr.decode()
        volumes = json.loads(config.stdout)["services"]["api"]["volumes"]
        assert [v["source"] for v in volumes if v["target"] == "/run/secrets"] == [real]
    finally:
        devsecrets(["down", *files, "-t", "0"], cwd=alice.project, env=env)
        _remove_project(isolated, project)


def test_the_helper_made_through_the_api_is_the_one_docker_run_makes_without_a_network(
    isolated: str, runtime_dir: Path
) -> None:
    """helper_run's two ways give the same container: same confinement, labels, volume and
    command; the API's has its network disabled (no libnetwork sandbox), `docker run`'s is
    `--network none`. Neither has an interface but loopback."""
    from devsecrets import engine_api, engine_prestart, helper_run

    env = {**os.environ, "DOCKER_HOST": isolated}
    assert engine_api.socket_for(env) is not None, "the isolated engine is a unix socket"
    made = {}
    projects = {"api": project_name(), "cli": project_name()}
    try:
        for way, project in projects.items():
            volume = f"devsecrets-{project}-secrets-{secrets.token_hex(4)}"
            spec = engine_prestart.helper_spec(project, volume, 1 << 24, "c" * 16, TEST_IMAGE)
            if way == "api":
                client = helper_run.start(spec, env)
            else:
                client = helper_run.attach(spec.run_argv(), env, new_session=False)
            name = f"devsecrets-{project}-helper"
            wait_for(lambda n=name: _docker(isolated, "top", n).returncode == 0, name)  # type: ignore[misc]
            engine_prestart.detach(client)  # the loop ends; the helper sleeps on
            found = json.loads(_docker(isolated, "inspect", name).stdout)[0]
            interfaces = _docker(isolated, "exec", name, "ls", "/sys/class/net").stdout.split()
            assert interfaces == [b"lo"], (way, interfaces)
            made[way] = found
        api, cli = made["api"], made["cli"]
        assert api["Config"]["NetworkDisabled"] is True
        assert cli["HostConfig"]["NetworkMode"] == "none"
        for key in ("CapAdd", "CapDrop", "ReadonlyRootfs", "SecurityOpt", "RestartPolicy"):
            assert api["HostConfig"][key] == cli["HostConfig"][key], key
        assert api["HostConfig"]["LogConfig"]["Type"] == cli["HostConfig"]["LogConfig"]["Type"]
        for key in ("User", "Entrypoint", "Cmd", "Image", "OpenStdin", "StdinOnce"):
            assert api["Config"][key] == cli["Config"][key], key

        def labels(found: dict, project: str) -> dict:
            return {k: v.replace(project, "P") for k, v in found["Config"]["Labels"].items()}

        assert labels(api, projects["api"]) == labels(cli, projects["cli"])
        for found, project in ((api, projects["api"]), (cli, projects["cli"])):
            (mount,) = found["Mounts"]
            assert (mount["Type"], mount["Destination"], mount["RW"]) == (
                "volume",
                "/devsecrets",
                True,
            )
            volume = json.loads(_docker(isolated, "volume", "inspect", mount["Name"]).stdout)[0]
            assert volume["Options"]["type"] == "tmpfs"
            assert volume["Options"]["o"] == "size=16777216,mode=0755,uid=0,gid=0"
            assert volume["Labels"]["devsecrets.project"] == project
    finally:
        for project in projects.values():
            _remove_project(isolated, project)


def test_a_first_up_stopped_before_compose_made_anything_leaves_nothing(
    alice: User, isolated: str, runtime_dir: Path
) -> None:
    """SIGTERM as `up -d` hands over to compose (the values are in; compose is released or
    about to be): exit 143, and the values stay only with a container to use them. With none
    made, the helper, its volume and the runtime directory are gone."""
    _, project, files = _one_secret_stack(alice)
    env = _env(alice, isolated, runtime_dir, DEVSECRETS_ENGINE_MODE="engine")
    empty = 0
    try:
        for _ in range(3):
            up = subprocess.Popen(
                [*devsecrets_cmd(), "up", *files, "-d"],
                cwd=alice.project,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            assert up.stderr is not None
            for line in up.stderr:
                if b"detached; run" in line:
                    up.send_signal(signal.SIGTERM)
                    break
            up.stderr.read()
            assert up.wait(timeout=60) == 128 + signal.SIGTERM
            if not _docker(
                isolated, "ps", "-aq", "--filter", f"label=com.docker.compose.project={project}"
            ).stdout.strip():
                empty += 1
                assert not _helpers(isolated, project) and not _volumes(isolated, project)
                assert not (runtime_dir / project).exists()
            devsecrets(["down", *files, "-t", "0"], cwd=alice.project, env=env)
        assert empty, "compose had made the container every time: nothing was tested"
    finally:
        devsecrets(["down", *files, "-t", "0"], cwd=alice.project, env=env)
        _remove_project(isolated, project)
