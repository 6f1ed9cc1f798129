#!/usr/bin/env python3
"""Live latency, engine mode beside host mode: a changed secret reaching a running container.

Two foreground `devsecrets up` run side by side, one in host mode on the first engine
(DOCKER_HOST), one in engine mode: on the engine at DEVSECRETS_ISOLATED_DOCKER_HOST when set
(one that cannot see this machine's tmpfs, `.ci/dockerd-isolated.sh`; the mode is detected),
else forced with `--engine-mode engine` on the first engine. Trials alternate between them.
The same loop as bench_live.py (bench/_common.py `Live`): two clocks per trial, from the store
file being replaced (its ctime, checked against an inotify watch) and from `devsecrets set`
being launched, to the new bytes being readable inside the container, read through
/proc/<pid>/root (so the engine must run on this machine, in any mount namespace) every
~0.2 ms; every read must be the old or the new value. devsecrets runs from a normal install
in a venv. Prints p50/p95/max. Target: engine mode p95 <= 100 ms from the store file.
Needs the image named by BENCH_IMAGE (default devsecrets-test-busybox).
Usage: bench_live_engine.py [--trials N]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import _common
import yaml


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=100)
    args = parser.parse_args()
    image = os.environ.get("BENCH_IMAGE", "devsecrets-test-busybox")
    isolated = os.environ.get("DEVSECRETS_ISOLATED_DOCKER_HOST", "")
    devsecrets = [str(_common.normal_install() / "devsecrets")]
    service = {
        "image": image,
        "network_mode": "none",
        "stop_signal": "SIGKILL",
        "command": ["sleep", "3600"],
        "secrets": ["x"],
    }
    print(f"bench_live_engine: {_common.machine()}")
    modes = ("host", "engine")
    lives: dict[str, _common.Live] = {}
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory(dir="/dev/shm") as rt:
        base = {
            **os.environ,
            "HOME": tmp,
            "DEVSECRETS_RUNTIME_DIR": f"{rt}/runtime",
            "SOPS_AGE_KEY_FILE": f"{tmp}/key.txt",
            "DEVSECRETS_HELPER_IMAGE": image,
        }
        for var in ("COMPOSE_FILE", "COMPOSE_PROJECT_NAME", "PYTHONPATH"):
            base.pop(var, None)
        base.setdefault("DOCKER_CONFIG", str(Path.home() / ".docker"))
        procs: dict[str, subprocess.Popen[bytes]] = {}
        envs: dict[str, dict[str, str]] = {}
        try:
            for mode in modes:
                project = Path(tmp) / mode
                project.mkdir()
                env = envs[mode] = {**base, "COMPOSE_PROJECT_NAME": f"benchlive{mode}"}
                up = [*devsecrets, "up"]
                if mode == "host":
                    up += ["--engine-mode", "host"]
                elif isolated:
                    env["DOCKER_HOST"] = isolated  # detected, not forced
                else:
                    up += ["--engine-mode", "engine"]
                run = {"cwd": project, "env": env, "check": True, "capture_output": True}
                subprocess.run([*devsecrets, "init"], **run)  # type: ignore[call-overload]
                subprocess.run([*devsecrets, "set", "x"], input=b"initial", **run)  # type: ignore[call-overload]
                stack = {"services": {"app": service}, "secrets": {"x": {"external": True}}}
                (project / "docker-stack.yml").write_text(yaml.safe_dump(stack))
                procs[mode] = subprocess.Popen(
                    up,
                    cwd=project,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    stdin=subprocess.DEVNULL,
                )
                pid = _common.container_pid(f"benchlive{mode}", env)
                target = Path(f"/proc/{pid}/root/run/secrets/x")
                lives[mode] = _common.Live(devsecrets, project, env, target)
            time.sleep(3)  # both watchers settled
            for trial in range(args.trials):
                for mode in modes if trial % 2 == 0 else reversed(modes):
                    lives[mode].trial(f"value-{trial}-{os.urandom(4).hex()}".encode())
        finally:
            said = {}
            for mode, proc in procs.items():
                proc.send_signal(signal.SIGTERM)
                said[mode] = proc.communicate(timeout=60)[1].decode(errors="replace")
                down = [*devsecrets, "down", "-t", "0"]  # the stopped containers too
                subprocess.run(down, cwd=Path(tmp) / mode, env=envs[mode], capture_output=True)
    for mode in modes:
        line = next((ln for ln in said[mode].splitlines() if " mode: " in ln), "")
        print(f"  {mode}: {line.removeprefix('devsecrets: ')[:110]}")
    print(f"trials: {args.trials} each, alternating; devsecrets from a normal install")
    for mode in modes:
        live = lives[mode]
        print(_common.latency_line(f"{mode} mode: store file replaced -> visible", live.from_store))
        print(_common.latency_line(f"{mode} mode: `set` launched -> visible", live.from_launch))
    print("  every read was the old or the new value (no torn, empty or missing read)")
    print(f"  at the end: {_common.machine()}")


if __name__ == "__main__":
    main()
