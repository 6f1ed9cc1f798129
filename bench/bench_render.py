#!/usr/bin/env python3
"""`devsecrets render` at 10, 100 and 1,000 secrets across 10-100 services: wall time (median)
and peak memory of the devsecrets process itself (compose's own children not counted).

Needs a Docker engine and compose v2, as `render` checks both.
Usage: python bench/bench_render.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

# Runs the CLI in-process and reports this process's own peak RSS on stderr's last line.
WRAPPER = (
    "import resource, sys\n"
    "from devsecrets.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "print('maxrss_kib', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def build(root: Path, secrets: int, services: int, env: dict[str, str]) -> None:
    from devsecrets.keys import find_identities
    from devsecrets.store import init_store

    ids = find_identities(env)
    store, _ = init_store(root / ".devsecrets", "bench", ids.public[0])
    for i in range(secrets):
        store.write(f"secret_{i:04d}", os.urandom(32).hex().encode(), ids)
    stack = {
        "services": {
            f"svc{s:03d}": {
                "image": "devsecrets-test-busybox",
                "network_mode": "none",
                "secrets": [f"secret_{i:04d}" for i in range(s, secrets, services)],
            }
            for s in range(services)
        },
        "secrets": {f"secret_{i:04d}": {"external": True} for i in range(secrets)},
    }
    (root / "docker-stack.yml").write_text(yaml.safe_dump(stack))


def run_once(root: Path, env: dict[str, str]) -> tuple[float, int]:
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", WRAPPER, "render"],
        cwd=root,
        env=env,
        capture_output=True,
        check=True,
    )
    elapsed = time.perf_counter() - start
    rss = int(out.stderr.decode().strip().splitlines()[-1].split()[1])
    return elapsed, rss


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"runs: {args.runs} each; median wall time, max peak RSS of the devsecrets process")
    for secrets, services in ((10, 10), (100, 50), (1000, 100)):
        with (
            tempfile.TemporaryDirectory() as tmp,
            tempfile.TemporaryDirectory(dir="/dev/shm") as rt,
        ):
            root = Path(tmp)
            key = root / "key.txt"
            from devsecrets.keys import create_key_file

            create_key_file(key, "bench")
            env = {
                **os.environ,
                "SOPS_AGE_KEY_FILE": str(key),
                "HOME": tmp,
                "DEVSECRETS_RUNTIME_DIR": f"{rt}/runtime",
                "COMPOSE_PROJECT_NAME": "benchrender",
            }
            build(root, secrets, services, env)
            samples = [run_once(root, env) for _ in range(args.runs)]
        median = statistics.median(t for t, _ in samples)
        peak = max(r for _, r in samples) / 1024
        label = f"{secrets:>5} secrets / {services:>3} services"
        print(f"  {label}: {median:6.3f} s, peak {peak:6.1f} MiB")


if __name__ == "__main__":
    main()
