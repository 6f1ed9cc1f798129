#!/usr/bin/env python3
"""`devsecrets up -d` against `docker compose up -d` on the same stack, side by side.

The compose run gets its secrets the only way plain compose can: plaintext `file:` secrets.
The devsecrets run uses the unchanged stack (`external: true`) and the encrypted store.
Runs are interleaved; each is followed by an untimed `down`. Prints medians and the ratio.
Needs a Docker engine, compose v2 and the image named by BENCH_IMAGE
(default devsecrets-test-busybox, built by .ci/dockerd.sh). Usage: bench_up.py [--runs N]
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

SERVICES, SECRETS = 3, 4


def stack(image: str, external: bool) -> dict:
    names = [f"secret_{i}" for i in range(SECRETS)]
    return {
        "services": {
            f"svc{s}": {
                "image": image,
                "network_mode": "none",
                "command": ["sleep", "600"],
                "stop_signal": "SIGKILL",
                "secrets": names,
            }
            for s in range(SERVICES)
        },
        "secrets": {
            n: ({"external": True} if external else {"file": f"./plain/{n}"}) for n in names
        },
    }


def timed(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, cwd=cwd, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=11)
    args = parser.parse_args()
    image = os.environ.get("BENCH_IMAGE", "devsecrets-test-busybox")
    devsecrets = [sys.executable, "-m", "devsecrets"]
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory(dir="/dev/shm") as rt:
        root = Path(tmp)
        plain_dir, secure_dir = root / "plain-project", root / "devsecrets-project"
        (plain_dir / "plain").mkdir(parents=True)
        secure_dir.mkdir()
        env = {
            **os.environ,
            "HOME": tmp,
            "DEVSECRETS_RUNTIME_DIR": f"{rt}/runtime",
            "SOPS_AGE_KEY_FILE": f"{tmp}/key.txt",
        }
        env.pop("COMPOSE_FILE", None)
        from devsecrets.keys import create_key_file

        create_key_file(Path(env["SOPS_AGE_KEY_FILE"]), "bench")
        subprocess.run(
            [*devsecrets, "init"], cwd=secure_dir, env=env, check=True, capture_output=True
        )
        for i in range(SECRETS):
            value = os.urandom(16).hex().encode()
            (plain_dir / "plain" / f"secret_{i}").write_bytes(value)
            subprocess.run(
                [*devsecrets, "set", f"secret_{i}"],
                cwd=secure_dir,
                env=env,
                input=value,
                check=True,
                capture_output=True,
            )
        (plain_dir / "compose.yaml").write_text(yaml.safe_dump(stack(image, external=False)))
        (secure_dir / "docker-stack.yml").write_text(yaml.safe_dump(stack(image, external=True)))
        commands = {
            "docker compose up -d (plaintext files)": (
                ["docker", "compose", "-p", "benchplain"],
                plain_dir,
            ),
            "devsecrets up -d (store, tmpfs)": ([*devsecrets], secure_dir),
        }
        samples: dict[str, list[float]] = {name: [] for name in commands}
        down = {
            "docker compose up -d (plaintext files)": [
                "docker",
                "compose",
                "-p",
                "benchplain",
                "down",
                "-t",
                "0",
            ],
            "devsecrets up -d (store, tmpfs)": [*devsecrets, "down", "-t", "0"],
        }
        try:
            for run in range(args.runs + 1):  # the first round warms caches and is not counted
                for name, (argv, cwd) in commands.items():
                    up = [*argv, "up", "-d"]
                    elapsed = timed(up, cwd, env)
                    if run:
                        samples[name].append(elapsed)
                    subprocess.run(down[name], cwd=cwd, env=env, check=True, capture_output=True)
        finally:
            for name, (_, cwd) in commands.items():
                subprocess.run(down[name], cwd=cwd, env=env, check=False, capture_output=True)
    medians = {name: statistics.median(times) for name, times in samples.items()}
    print(f"runs: {args.runs} each, interleaved; {SERVICES} services x {SECRETS} secrets")
    for name, median in medians.items():
        print(f"  {name:<40} median {median * 1000:7.0f} ms")
    names = list(medians)
    print(f"ratio devsecrets / compose (median): {medians[names[1]] / medians[names[0]]:.2f}")


if __name__ == "__main__":
    main()
