#!/usr/bin/env python3
"""Live latency, engine mode beside host mode: from `devsecrets set` returning (the store file
replaced) to the new bytes being readable in the running container, p50/p95.

Two foreground `devsecrets up` run side by side on the same engine, one with
`--engine-mode host`, one with `--engine-mode engine`; trials alternate. The container's file is
read through /proc/<pid>/root, so the engine must run on this machine (any mount namespace).
Needs the image named by BENCH_IMAGE (default devsecrets-test-busybox).
Usage: bench_live_engine.py [--trials N]
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


def container_pid(project: str, env: dict[str, str]) -> int:
    for _ in range(1200):
        ids = subprocess.run(
            ["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={project}"],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        ).stdout.split()
        if ids:
            out = subprocess.run(
                ["docker", "inspect", "-f", "{{.State.Pid}}", ids[0]],
                capture_output=True,
                text=True,
                env=env,
                check=True,
            )
            return int(out.stdout)
        time.sleep(0.1)
    raise SystemExit(f"{project}: no container")


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=50)
    args = parser.parse_args()
    image = os.environ.get("BENCH_IMAGE", "devsecrets-test-busybox")
    devsecrets = [sys.executable, "-m", "devsecrets"]
    service = {
        "image": image,
        "network_mode": "none",
        "stop_signal": "SIGKILL",
        "command": ["sleep", "3600"],
        "secrets": ["x"],
    }
    samples: dict[str, list[float]] = {"host": [], "engine": []}
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory(dir="/dev/shm") as rt:
        from devsecrets.keys import create_key_file

        env = {
            **os.environ,
            "HOME": tmp,
            "DEVSECRETS_RUNTIME_DIR": f"{rt}/runtime",
            "SOPS_AGE_KEY_FILE": f"{tmp}/key.txt",
            "DEVSECRETS_HELPER_IMAGE": image,
        }
        env.pop("COMPOSE_FILE", None)
        create_key_file(Path(env["SOPS_AGE_KEY_FILE"]), "bench")
        procs, files, dirs = {}, {}, {}
        try:
            for mode in samples:
                project = Path(tmp) / mode
                project.mkdir()
                dirs[mode] = project
                run = {"cwd": project, "env": env, "check": True, "capture_output": True}
                subprocess.run([*devsecrets, "init"], **run)  # type: ignore[call-overload]
                subprocess.run([*devsecrets, "set", "x"], input=b"initial", **run)  # type: ignore[call-overload]
                stack = {"services": {"app": service}, "secrets": {"x": {"external": True}}}
                (project / "docker-stack.yml").write_text(yaml.safe_dump(stack))
                procs[mode] = subprocess.Popen(
                    [*devsecrets, "up", "--engine-mode", mode, "-p", f"benchlive{mode}"],
                    cwd=project,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    stdin=subprocess.DEVNULL,
                )
                pid = container_pid(f"benchlive{mode}", env)
                files[mode] = Path(f"/proc/{pid}/root/run/secrets/x")
            time.sleep(2)
            for trial in range(args.trials):
                for mode in samples:
                    value = f"value-{trial}-{os.urandom(4).hex()}".encode()
                    subprocess.run(
                        [*devsecrets, "set", "x"],
                        cwd=dirs[mode],
                        env=env,
                        input=value,
                        check=True,
                        capture_output=True,
                    )
                    start = time.perf_counter()
                    while True:
                        try:
                            if files[mode].read_bytes() == value:
                                break
                        except OSError:
                            pass
                        if time.perf_counter() - start > 10:
                            raise SystemExit(f"{mode}: change not seen in 10 s")
                        time.sleep(0.001)
                    samples[mode].append((time.perf_counter() - start) * 1000)
        finally:
            for proc in procs.values():
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=60)
    print(f"trials: {args.trials} each, alternating; set returned -> new bytes in the container")
    for mode, times in samples.items():
        p50, p95 = statistics.median(times), percentile(times, 0.95)
        print(f"  {mode + ' mode':<12} p50 {p50:7.1f} ms   p95 {p95:7.1f} ms")


if __name__ == "__main__":
    main()
