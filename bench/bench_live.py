#!/usr/bin/env python3
"""Latency of a secret change reaching a running container, side by side with compose watch.

devsecrets: from the moment `devsecrets set x` returns to the moment the new value is
readable at /run/secrets/x inside the container (read through /proc/<pid>/root, i.e. the
container's own mount namespace), with a foreground `devsecrets up` watching.
compose: the same file, changed on the host (write + rename, as an editor would), synced by
`docker compose watch` (`develop.watch` action `sync`), from the write to readable inside.
Trials alternate between the two. Prints p50/p95 and the p50 ratio. Needs an engine, compose
and BENCH_IMAGE (default devsecrets-test-busybox). Usage: bench_live.py [--trials N]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml


def container_pid(project: str) -> int:
    for _ in range(600):
        ids = subprocess.run(
            ["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={project}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        if ids:
            pid = subprocess.run(
                ["docker", "inspect", "-f", "{{.State.Pid}}", ids[0]],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            if pid not in ("", "0"):
                return int(pid)
        time.sleep(0.1)
    sys.exit(f"bench: no running container for {project}")


def wait_visible(path: Path, value: bytes, timeout: float = 10.0) -> float:
    """Poll (every ~0.2 ms) until `path` holds `value`; returns the time it was first seen."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        try:
            if path.read_bytes() == value:
                return time.perf_counter()
        except OSError:
            pass
        time.sleep(0.0002)
    sys.exit(f"bench: {path} never showed the new value")


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=100)
    args = parser.parse_args()
    image = os.environ.get("BENCH_IMAGE", "devsecrets-test-busybox")
    devsecrets = [sys.executable, "-m", "devsecrets"]
    service = {
        "image": image,
        "network_mode": "none",
        "stop_signal": "SIGKILL",
        "command": ["sleep", "3600"],
    }
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory(dir="/dev/shm") as rt:
        root = Path(tmp)
        ours, theirs = root / "devsecrets", root / "compose-watch"
        (theirs / "src").mkdir(parents=True)
        ours.mkdir()
        env = {
            **os.environ,
            "HOME": tmp,
            "DEVSECRETS_RUNTIME_DIR": f"{rt}/runtime",
            "SOPS_AGE_KEY_FILE": f"{tmp}/key.txt",
            "COMPOSE_PROJECT_NAME": "benchlive",
        }
        from devsecrets.keys import create_key_file

        create_key_file(Path(env["SOPS_AGE_KEY_FILE"]), "bench")
        subprocess.run([*devsecrets, "init"], cwd=ours, env=env, check=True, capture_output=True)
        subprocess.run(
            [*devsecrets, "set", "x"],
            cwd=ours,
            env=env,
            input=b"initial",
            check=True,
            capture_output=True,
        )
        (ours / "docker-stack.yml").write_text(
            yaml.safe_dump(
                {
                    "services": {"app": {**service, "secrets": ["x"]}},
                    "secrets": {"x": {"external": True}},
                }
            )
        )
        (theirs / "src" / "x").write_bytes(b"initial")
        (theirs / "compose.yaml").write_text(
            yaml.safe_dump(
                {
                    "services": {
                        "app": {
                            **service,
                            "develop": {
                                "watch": [
                                    {"action": "sync", "path": "./src", "target": "/run/sync"}
                                ]
                            },
                        }
                    }
                }
            )
        )
        watch_env = {**env, "COMPOSE_PROJECT_NAME": "benchwatch"}

        up = subprocess.Popen(
            [*devsecrets, "up"],
            cwd=ours,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        subprocess.run(
            ["docker", "compose", "up", "-d"],
            cwd=theirs,
            env=watch_env,
            check=True,
            capture_output=True,
        )
        watch = subprocess.Popen(
            ["docker", "compose", "watch", "--no-up"],
            cwd=theirs,
            env=watch_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        try:
            ours_file = Path(f"/proc/{container_pid('benchlive')}/root/run/secrets/x")
            theirs_file = Path(f"/proc/{container_pid('benchwatch')}/root/run/sync/x")
            time.sleep(3)  # both watchers settled
            ours_ms: list[float] = []
            theirs_ms: list[float] = []
            for trial in range(args.trials):
                value = f"value-{trial}-{os.urandom(4).hex()}".encode()
                subprocess.run(
                    [*devsecrets, "set", "x"],
                    cwd=ours,
                    env=env,
                    input=value,
                    check=True,
                    capture_output=True,
                )
                start = time.perf_counter()
                ours_ms.append((wait_visible(ours_file, value) - start) * 1000)

                staged = theirs / "src" / ".x.tmp"
                staged.write_bytes(value)
                staged.rename(theirs / "src" / "x")
                start = time.perf_counter()
                theirs_ms.append((wait_visible(theirs_file, value) - start) * 1000)
        finally:
            watch.send_signal(signal.SIGINT)
            watch.wait(timeout=30)
            up.send_signal(signal.SIGTERM)
            up.wait(timeout=60)
            subprocess.run(
                ["docker", "compose", "down", "-t", "0"],
                cwd=theirs,
                env=watch_env,
                capture_output=True,
            )
    print(f"trials: {args.trials} each, alternating")
    for name, samples in (
        ("devsecrets (set -> visible)", ours_ms),
        ("compose watch sync (write -> visible)", theirs_ms),
    ):
        p50, p95 = statistics.median(samples), percentile(samples, 0.95)
        print(f"  {name:<40} p50 {p50:7.1f} ms   p95 {p95:7.1f} ms")
    ratio = statistics.median(theirs_ms) / statistics.median(ours_ms)
    print(f"p50 ratio compose watch / devsecrets: {ratio:.1f}x")


if __name__ == "__main__":
    main()
