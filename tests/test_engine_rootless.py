"""Rootless Docker: a real rootless dockerd, run by a throwaway non-root user inside
rootlesskit's user and mount namespaces (`.ci/dockerd-rootless.sh`), and devsecrets run AS
that user against it, with that user's own XDG_RUNTIME_DIR (/run/user/<uid>, a tmpfs).
DEVSECRETS_ROOTLESS_DOCKER_HOST is the engine's address and DEVSECRETS_ROOTLESS_STATE its
state dir (.ci/run sets both); without them the tests start such an engine themselves (under
CI=true or DEVSECRETS_TEST_USERS=1: it creates a throwaway user, as test_multi_user does). The
user is the owner of its socket. Runs as root (it becomes the user for each devsecrets
command).

What is measured here: which mode the probe picks and why, what a container sees of a
default grant (0:0) and of a uid 1000 / gid 1000 / 0400 grant in host and in engine mode,
that the canary reaches neither the engine's data root nor any argv or environment, and that
`down` leaves nothing behind."""

from __future__ import annotations

import hashlib
import os
import pwd
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import (
    IN_CI,
    TEST_IMAGE,
    User,
    make_user,
    need,
    probe_secrets,
    project_name,
    wait_for,
    write_stack,
)
from test_engine_mode import _peek, _peek_seen
from test_leak_audit import files_containing, processes_containing

import devsecrets as package

pytestmark = pytest.mark.docker

ROOTLESS = os.environ.get("DEVSECRETS_ROOTLESS_DOCKER_HOST", "")
ROOTLESS_STATE = os.environ.get("DEVSECRETS_ROOTLESS_STATE", "/tmp/devsecrets-dockerd-rootless")
SCRIPT = Path(__file__).resolve().parent.parent / ".ci" / "dockerd-rootless.sh"
DOCKERD_ROOTLESS = Path("/usr/share/docker.io/contrib/dockerd-rootless.sh")
CODE = Path(package.__file__).resolve().parent.parent  # the devsecrets under test


def _docker(host: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["docker", *args], env={**os.environ, "DOCKER_HOST": host}, capture_output=True
    )


@dataclass(frozen=True)
class Rootless:
    host: str
    uid: int
    gid: int
    name: str
    state: Path  # where .ci/dockerd-rootless.sh keeps it

    @property
    def xdg(self) -> Path:
        """The user's XDG_RUNTIME_DIR, a tmpfs, as logind makes it (the script mounts it)."""
        return Path(f"/run/user/{self.uid}")

    def data_root(self) -> Path:
        out = _docker(self.host, "info", "--format", "{{.DockerRootDir}}")
        return Path(out.stdout.decode().strip())


def _unreachable_prefix() -> tuple[Path, Path] | None:
    """A directory above this interpreter that other users may not enter (pyenv's
    /root/.pyenv under a 0700 /root), and its child that leads to the interpreter."""
    found = None
    for path in {Path(sys.executable).resolve(), Path(sys.prefix), Path(sys.base_prefix)}:
        parts = path.resolve().parts
        for depth in range(1, len(parts)):
            here = Path(*parts[:depth])
            if not os.stat(here).st_mode & stat.S_IXOTH:
                pair = (here, Path(*parts[: depth + 1]))
                if found not in (None, pair):
                    pytest.fail(f"the interpreter lies below {found[0]} and {here}")
                found = pair
                break
    return found


def _unavailable() -> str | None:
    """Why this machine cannot start a rootless engine here (None: it can)."""
    if os.geteuid() != 0:
        return "starts a rootless engine and runs devsecrets as its user: needs root"
    if not (IN_CI or os.environ.get("DEVSECRETS_TEST_USERS") == "1"):
        return (
            "no rootless engine given (DEVSECRETS_ROOTLESS_DOCKER_HOST, from "
            "`bash .ci/dockerd-rootless.sh start`), and starting one creates a throwaway user: "
            "only under CI=true or DEVSECRETS_TEST_USERS=1"
        )
    for tool in ("rootlesskit", "newuidmap", "unshare", "setpriv"):
        if shutil.which(tool) is None:
            return f"no {tool} for a rootless engine (Debian: apt-get install rootlesskit uidmap)"
    if not DOCKERD_ROOTLESS.exists():
        return f"no {DOCKERD_ROOTLESS} (Debian's docker.io)"
    return None


@pytest.fixture(scope="session")
def rootless(docker_engine: str) -> Iterator[Rootless]:
    """The rootless engine: the one .ci/run started (DEVSECRETS_ROOTLESS_DOCKER_HOST), else
    one started here for this session (its state and user named after this checkout) and
    stopped after. It must say it is rootless, hold the test image, and its socket's owner
    (its user) must not be root."""
    host, state = ROOTLESS, ROOTLESS_STATE
    started = False
    if not host:
        need(_unavailable())
        digest = hashlib.sha256(str(CODE).encode()).hexdigest()[:8]
        state = f"/tmp/devsecrets-dockerd-rootless-{digest}"  # noqa: S108 - root's, like .ci's
        out = subprocess.run(
            ["bash", str(SCRIPT), "start"],
            env={**os.environ, "DEVSECRETS_ROOTLESS_STATE": state},
            capture_output=True,
        )
        started = out.returncode == 0
        lines = out.stderr.decode(errors="replace").strip().splitlines()
        need(None if started else f"the rootless engine did not start: {lines[-1:]}")
        host = out.stdout.decode().strip()
    try:
        reason = None
        if os.geteuid() != 0:
            reason = "runs devsecrets as the rootless engine's user: needs root"
        elif not host.startswith("unix://"):
            reason = f"DEVSECRETS_ROOTLESS_DOCKER_HOST={host} is not a unix socket"
        elif b"name=rootless" not in _docker(host, "info", "-f", "{{.SecurityOptions}}").stdout:
            reason = f"the engine at {host} does not answer or is not rootless"
        elif _docker(host, "image", "inspect", TEST_IMAGE).returncode != 0:
            reason = f"the rootless engine at {host} lacks {TEST_IMAGE}"
        need(reason)
        uid = os.stat(host.removeprefix("unix://")).st_uid
        entry = pwd.getpwuid(uid)
        assert uid != 0, "the rootless engine's socket belongs to root"
        yield Rootless(host, uid, entry.pw_gid, entry.pw_name, Path(state))
    finally:
        if started:
            subprocess.run(
                ["bash", str(SCRIPT), "stop"],
                env={**os.environ, "DEVSECRETS_ROOTLESS_STATE": state},
                capture_output=True,
            )


@dataclass
class Person:
    """The rootless engine's user, with a store and a stack in a directory of their own."""

    engine: Rootless
    user: User  # its `run` (as root, in this process) fills the store
    base: Path

    def give(self) -> None:
        """Everything under the base directory to the user (root wrote some of it)."""
        for path in [self.base, *self.base.rglob("*")]:
            os.chown(path, self.engine.uid, self.engine.gid, follow_symlinks=False)

    def env(self, *, xdg: bool = True, **extra: str) -> dict[str, str]:
        env = {
            "PATH": os.environ["PATH"],
            "HOME": str(self.user.home),
            "USER": self.engine.name,
            "LOGNAME": self.engine.name,
            "LANG": "C.UTF-8",
            "PYTHONPATH": str(CODE),
            "DOCKER_HOST": self.engine.host,
            # the engine's user cannot read root's Docker config; the compose plugin the
            # tests need is installed system-wide (.ci/dockerd.sh)
            "DOCKER_CONFIG": str(self.user.home / ".docker"),
            "DEVSECRETS_HELPER_IMAGE": TEST_IMAGE,
        }
        if xdg:
            env["XDG_RUNTIME_DIR"] = str(self.engine.xdg)
        return {**env, **extra}

    def command(self, *args: str) -> list[str]:
        """The argv that runs `devsecrets ARGS` as the user (uid, gid, no other groups)."""
        self.give()
        engine = self.engine
        argv = [sys.executable, "-m", "devsecrets", *args]
        become = ["setpriv", f"--reuid={engine.uid}", f"--regid={engine.gid}", "--clear-groups"]
        hidden = _unreachable_prefix()
        if hidden is None:
            return [*become, *argv]
        # The interpreter is where the user cannot go: in a mount namespace of its own, the
        # closed directory is covered by an open tmpfs holding just the way to it.
        return ["unshare", "--mount", "sh", "-c", _REVEAL, "sh", *map(str, hidden), *become, *argv]

    def devsecrets(
        self, *args: str, env: dict[str, str] | None = None, input: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            self.command(*args),
            cwd=self.user.project,
            env=env or self.env(),
            input=input,
            capture_output=True,
            timeout=180,
        )


_REVEAL = """set -e
hidden=$1 keep=$2; shift 2
aside=$(mktemp -d)
mount --rbind "$keep" "$aside"
mount -t tmpfs -o mode=0755 tmpfs "$hidden"
mkdir "$keep"
mount --move "$aside" "$keep"
rmdir "$aside"
exec "$@"
"""


@pytest.fixture
def person(rootless: Rootless, monkeypatch: pytest.MonkeyPatch) -> Iterator[Person]:
    monkeypatch.setattr("getpass.getuser", lambda: rootless.name)
    base = Path(tempfile.mkdtemp(prefix="dsrootless-", dir="/tmp"))  # noqa: S108 - the user's
    roots = [rootless.xdg / "devsecrets", Path(f"/dev/shm/devsecrets-{rootless.uid}")]
    made = [root for root in roots if not root.exists()]
    try:
        project = base / "project"
        project.mkdir()
        user = make_user(base, "rootless", project)
        (user.home / ".docker").mkdir()
        assert user.run("init").exit_code == 0
        yield Person(rootless, user, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)
        for root in made:  # the throwaway user's default runtime roots, made by this test
            shutil.rmtree(root, ignore_errors=True)


def _stack(person: Person) -> dict[str, bytes]:
    """One service with a default grant (Swarm: 0:0 0444) and a uid 1000 / gid 1000 / 0400
    one; a canary in each value."""
    values = {
        "db_password": b"canary-rootless-" + secrets.token_hex(12).encode(),
        "tls_key": b"canary-rootless-key-" + secrets.token_hex(40).encode() + b"\n",
    }
    for name, value in values.items():
        assert person.user.run("set", name, input=value).exit_code == 0
    grants = [
        "db_password",
        {"source": "tls_key", "target": "/etc/app/tls.key", "uid": "1000", "gid": "1000"}
        | {"mode": 0o400},
    ]
    write_stack(person.user.project, TEST_IMAGE, {"api": {"secrets": grants}})
    return values


def _container(host: str, project: str) -> str:
    out = _docker(host, "ps", "-q", "--filter", f"label=com.docker.compose.project={project}")
    return out.stdout.decode().strip()


def _leftovers(host: str, project: str) -> list[str]:
    """The project's containers (its services and the helper) and volumes still there."""
    found = []
    for label in ("com.docker.compose.project", "devsecrets.project"):
        found += _docker(host, "ps", "-aq", "--filter", f"label={label}={project}").stdout.split()
    found += _docker(
        host, "volume", "ls", "-q", "--filter", f"label=devsecrets.project={project}"
    ).stdout.split()
    return [item.decode() for item in found]


def _remove(host: str, project: str) -> None:
    for item in _leftovers(host, project):
        _docker(host, "rm", "-f", item)
        _docker(host, "volume", "rm", "-f", item)


def test_the_probe_picks_host_mode_for_both_default_runtime_roots(person: Person) -> None:
    """The rootless dockerd runs in rootlesskit's mount namespace with /run copied up
    (a tmpfs of symlinks into the real /run) and /dev/shm shared: it sees both
    $XDG_RUNTIME_DIR/devsecrets and /dev/shm/devsecrets-<uid>."""
    _stack(person)
    uid = person.engine.uid
    for xdg, root in (
        (True, person.engine.xdg / "devsecrets"),
        (False, Path(f"/dev/shm/devsecrets-{uid}")),
    ):
        project = project_name()
        env = person.env(xdg=xdg)
        try:
            out = person.devsecrets("render", "-f", "docker-stack.yml", "-p", project, env=env)
            assert out.returncode == 0, out.stderr.decode()
            said = [ln for ln in out.stderr.decode().splitlines() if " mode: " in ln]
            assert said == [f"devsecrets: host mode: the engine sees {root} on this machine"]
            assert Path(out.stdout.decode().strip()).is_relative_to(root)
        finally:
            down = person.devsecrets("down", "-f", "docker-stack.yml", "-p", project, env=env)
            assert down.returncode == 0, down.stderr.decode()
            _remove(person.engine.host, project)
        assert not (root / project).exists()


def _owner_lines(stderr: bytes) -> list[str]:
    return [ln for ln in stderr.decode().splitlines() if "wants uid:gid" in ln]


@pytest.mark.parametrize("mode", ["host", "engine"])
def test_swarm_parity_as_the_rootless_user(person: Person, mode: str) -> None:
    values = _stack(person)
    host, project = person.engine.host, project_name()
    files = ["-f", "docker-stack.yml", "-p", project]
    forced = [] if mode == "host" else ["--engine-mode", "engine"]
    try:
        up = person.devsecrets("up", *files, "-d", *forced)
        assert up.returncode == 0, up.stderr.decode()
        assert f"devsecrets: {mode} mode: ".encode() in up.stderr
        cid = _container(host, project)
        seen = probe_secrets(cid, {**os.environ, "DOCKER_HOST": host})
        as_app = _docker(host, "exec", "-u", "1000:1000", cid, "cat", "/etc/app/tls.key")
    finally:
        person.devsecrets("down", *files, "-t", "0")
        _remove(host, project)
    digest = {name: hashlib.sha256(value).hexdigest() for name, value in values.items()}
    files_seen = {ln.split()[0]: ln.split()[1:] for ln in seen if not ln.startswith("dir ")}
    assert "dir /run/secrets 755 0 0" in seen
    size = str(len(values["db_password"]))
    # the default grant is exact in both modes: the user's files are root's in the container
    assert files_seen["/run/secrets/db_password"] == [
        size,
        "444",
        "0",
        "0",
        digest["db_password"],
        "tmpfs",
        "ro",
    ]
    key = files_seen["/etc/app/tls.key"]
    assert key[0] == str(len(values["tls_key"]))
    assert key[1] == "400"
    assert key[4:] == [digest["tls_key"], "tmpfs", "ro"]
    owner_lines = _owner_lines(up.stderr)
    if mode == "engine":  # set inside the engine's user namespace: exact, and nothing to say
        assert key[2:4] == ["1000", "1000"]
        assert as_app.returncode == 0 and as_app.stdout == values["tls_key"]
        assert owner_lines == []
    else:  # what the user can give: their own files, which the container sees as 0:0
        assert key[2:4] == ["0", "0"]
        assert as_app.returncode != 0  # uid 1000 cannot read a 0400 file of root's
        assert owner_lines == [
            "devsecrets: warning: service api: /etc/app/tls.key wants uid:gid 1000:1000; "
            "a rootless engine shows your files to its containers as 0:0 (the mode is "
            "exact); --engine-mode engine gives the exact owner"
        ]
    for value in values.values():
        assert value not in up.stdout + up.stderr


@pytest.mark.parametrize("mode", ["host", "engine"])
def test_no_canary_on_the_engines_disk_and_down_leaves_nothing(person: Person, mode: str) -> None:
    values = _stack(person)
    engine = person.engine
    host, project, data_root = engine.host, project_name(), engine.data_root()
    assert data_root.is_dir()
    files = ["-f", "docker-stack.yml", "-p", project]
    forced = [] if mode == "host" else ["--engine-mode", "engine"]
    runtime_root = engine.xdg / "devsecrets"
    try:
        up = person.devsecrets("up", *files, "-d", *forced)
        assert up.returncode == 0, up.stderr.decode()
        cid = _container(host, project)
        served = _docker(host, "exec", cid, "cat", "/run/secrets/db_password").stdout
        assert served == values["db_password"]
        if mode == "engine":  # on the engine's tmpfs only, not in the client's runtime root
            assert _leftovers(host, project)  # the helper and its volume
            for value in values.values():
                assert files_containing(value, [runtime_root]) == []
        for value in values.values():
            assert files_containing(value, [data_root]) == []
            assert processes_containing(value) == []
        down = person.devsecrets("down", *files, "-t", "0")
        assert down.returncode == 0, down.stderr.decode()
        assert _leftovers(host, project) == []
        assert not (runtime_root / project).exists()
        for value in values.values():
            assert files_containing(value, [data_root, runtime_root, person.base]) == []
            assert processes_containing(value) == []
            assert value not in up.stdout + up.stderr + down.stdout + down.stderr
    finally:
        person.devsecrets("down", *files, "-t", "0")
        _remove(host, project)


@pytest.mark.parametrize("mode", ["host", "engine"])
def test_a_live_change_reaches_the_running_container(person: Person, mode: str) -> None:
    values = _stack(person)
    second = b"canary-rootless-2-" + secrets.token_hex(12).encode()
    host, project = person.engine.host, project_name()
    files = ["-f", "docker-stack.yml", "-p", project]
    forced = [] if mode == "host" else ["--engine-mode", "engine"]
    watch = None
    err = b""
    try:
        up = person.devsecrets("up", *files, "-d", *forced)
        assert up.returncode == 0, up.stderr.decode()
        cid = _container(host, project)
        watch = subprocess.Popen(
            person.command("watch", *files, *forced),
            cwd=person.user.project,
            env=person.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        wait_for(lambda: b"watching" in _peek(watch), "the watch to start", timeout=120)
        changed = person.devsecrets("set", "db_password", input=second)
        assert changed.returncode == 0, changed.stderr.decode()

        def served() -> bytes:
            return _docker(host, "exec", cid, "cat", "/run/secrets/db_password").stdout

        wait_for(lambda: served() == second, "the change in the running container", timeout=120)
        assert _container(host, project) == cid  # the same container: not restarted
        assert b"db_password changed" in _peek(watch)
    finally:
        if watch is not None:
            watch.terminate()
            _, rest = watch.communicate(timeout=30)
            err = _peek_seen(watch) + rest
        person.devsecrets("down", *files, "-t", "0")
        _remove(host, project)
    for value in (*values.values(), second):
        assert value not in err, "a value in the watch's output"
        assert processes_containing(value) == []


def test_an_engine_restart_does_not_start_the_service_without_its_secrets(person: Person) -> None:
    # stops and starts the engine at its state dir: only if that is the engine the tests
    # were given. Its stop also unmounts the user's XDG_RUNTIME_DIR, as a reboot would.
    host, state = person.engine.host, person.engine.state
    reason = None
    if host != f"unix://{state}/docker.sock":
        reason = f"DEVSECRETS_ROOTLESS_STATE ({state}) is not the state of {host}"
    elif not (state / "dockerd.pid").exists():
        reason = f"the rootless engine's state is not at {state}"
    need(reason)
    value = b"canary-rootless-" + secrets.token_hex(12).encode()
    assert person.user.run("set", "db_password", input=value).exit_code == 0
    write_stack(
        person.user.project,
        TEST_IMAGE,
        {"api": {"secrets": ["db_password"], "restart": "always"}},
    )
    project = project_name()
    files = ["-f", "docker-stack.yml", "-p", project]
    script_env = {**os.environ, "DEVSECRETS_ROOTLESS_STATE": str(state)}
    try:
        up = person.devsecrets("up", *files, "-d", "--engine-mode", "engine")
        assert up.returncode == 0, up.stderr.decode()
        subprocess.run(["bash", str(SCRIPT), "stop"], env=script_env, check=True)
        subprocess.run(
            ["bash", str(SCRIPT), "start"], env=script_env, check=True, stdout=subprocess.DEVNULL
        )
        time.sleep(3)  # the engine's own restart of `restart: always` containers
        cid = _docker(
            host, "ps", "-aq", "--filter", f"label=com.docker.compose.project={project}"
        ).stdout.decode()
        assert cid.strip()
        running = _docker(host, "inspect", "--format", "{{.State.Running}}", cid.strip())
        assert running.stdout.decode().strip() == "false"
        start = _docker(host, "start", cid.strip())
        assert start.returncode != 0
        # the directory inside the volume exists only while its tmpfs is mounted and filled
        assert (
            b"no such file or directory" in start.stderr
            or b"bind source path does not exist" in start.stderr
        )
        again = person.devsecrets("up", *files, "-d", "--engine-mode", "engine")
        assert again.returncode == 0, again.stderr.decode()
        cid = wait_for(lambda: _container(host, project), "api after up")
        assert _docker(host, "exec", cid, "cat", "/run/secrets/db_password").stdout == value
    finally:
        person.devsecrets("down", *files, "-t", "0")
        _remove(host, project)
