#!/usr/bin/env python3
"""`devsecrets render` at 10, 100 and 1,000 secrets (10, 50, 100 services): wall time, peak
memory, and how it grows.

Timed: from spawning `devsecrets render` (the console script of a normal install, see
bench/_common.py) to its exit, after it wrote every secret file and the override. Paired in the
same rounds (order alternating) with its floor: `docker compose config --format json` of the
same stack, the one compose pass render needs. Peak RSS: of the devsecrets process itself
(its compose child not counted), from a separate untimed run that reports getrusage(SELF).
Every secret is granted to one service. Needs a Docker engine and compose v2.
Usage: python3 bench/bench_render.py [--runs N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
from pathlib import Path

import _common

# Runs the CLI in-process and reports this process's own peak RSS on stderr's last line.
WRAPPER = (
    "import resource, sys\n"
    "from devsecrets.entry import main\n"
    "code = main(sys.argv[1:])\n"
    "print('maxrss_kib', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(code)\n"
)
FILL = """
import os, sys
from pathlib import Path
from devsecrets.keys import find_identities
from devsecrets.store import find_store
store, ids = find_store(Path.cwd()), find_identities(os.environ)
for i in range(int(sys.argv[1])):
    store.write(f"secret_{i:04d}", os.urandom(32).hex().encode(), ids)
"""
SIZES = ((10, 10), (100, 50), (1000, 100))


def build(root: Path, secrets: int, services: int, env: dict[str, str], bindir: Path) -> None:
    _common.run([str(bindir / "devsecrets"), "init"], env=env, cwd=root)
    subprocess.run(
        [str(bindir / "python3"), "-c", FILL, str(secrets)], env=env, cwd=root, check=True
    )
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
    (root / "docker-stack.yml").write_text(json.dumps(stack))


def peak_rss_mib(bindir: Path, root: Path, env: dict[str, str]) -> float:
    out = subprocess.run(
        [str(bindir / "python3"), "-c", WRAPPER, "render"],
        cwd=root,
        env=env,
        capture_output=True,
        check=True,
    )
    return int(out.stderr.decode().strip().splitlines()[-1].split()[1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    bindir = _common.normal_install()
    print(f"bench_render: {_common.machine()}; devsecrets {bindir}")
    print(f"{args.runs} rounds per size, order alternating; peak RSS from one extra run")
    medians: dict[int, float] = {}
    for secrets, services in SIZES:
        with (
            tempfile.TemporaryDirectory() as tmp,
            tempfile.TemporaryDirectory(dir="/dev/shm") as rt,
        ):
            root = Path(tmp)
            env = {
                **os.environ,
                "HOME": tmp,
                "DEVSECRETS_RUNTIME_DIR": f"{rt}/runtime",
                "COMPOSE_PROJECT_NAME": "benchrender",
            }
            for var in ("COMPOSE_FILE", "PYTHONPATH", "SOPS_AGE_KEY_FILE", "DEVSECRETS_STORE"):
                env.pop(var, None)
            build(root, secrets, services, env, bindir)
            ours = f"devsecrets render, {secrets} secrets / {services} services"
            samples = _common.paired(
                {
                    ours: _common.command(
                        [str(bindir / "devsecrets"), "render"], env=env, cwd=root
                    ),
                    "floor: docker compose config": _common.command(
                        [
                            "docker",
                            "compose",
                            "-f",
                            "docker-stack.yml",
                            "config",
                            "--format",
                            "json",
                        ],
                        env=env,
                        cwd=root,
                    ),
                },
                args.runs,
            )
            rss = peak_rss_mib(bindir, root, env)
            subprocess.run(
                [str(bindir / "devsecrets"), "down"],
                cwd=root,
                env=env,
                check=False,
                capture_output=True,
            )
        medians[secrets] = _common.report(samples)[ours]
        print(f"  peak RSS of the devsecrets process: {rss:.1f} MiB (target <= 100 MiB at 1,000)")
    (a, ta), (b, tb), (c, tc) = sorted(medians.items())
    low, high = (tb - ta) / (b - a) * 1000, (tc - tb) / (c - b) * 1000
    print(
        f"growth per secret: {low:.2f} ms (10->100), {high:.2f} ms (100->1,000); linear if these "
        f"are close; 1,000 secrets: {tc:.3f} s (target <= 1.0 s)"
    )


if __name__ == "__main__":
    main()
