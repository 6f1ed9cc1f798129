#!/usr/bin/env python3
"""`devsecrets up -d` against `docker compose up -d` on the same stack, side by side.

The compose run gets its secrets the only way plain compose can: plaintext `file:` secrets.
The devsecrets run uses the unchanged stack (`external: true`) and the encrypted store.
3 services x 4 secrets. Timed: from spawning `up -d` to its exit (all containers started and
compose returned); each run is followed by an untimed `down -t 0`. Rounds alternate the order
(A B, B A, ...). Floors, timed in the same rounds: `docker compose config` of the devsecrets
stack (the one compose pass devsecrets itself needs) and `python3 -c pass`.
devsecrets runs from a normal install in a venv (bench/_common.py).
Needs a Docker engine, compose v2 and the image named by BENCH_IMAGE (default
devsecrets-test-busybox, built by .ci/dockerd.sh). Usage: bench_up.py [--runs N]

Engine mode (issue 11), in the same rounds: with DEVSECRETS_ISOLATED_DOCKER_HOST set (an engine
that cannot see this machine's tmpfs, `.ci/dockerd-isolated.sh`), `devsecrets up -d` there
chooses engine mode by itself (the probe is timed too), and plain `docker compose up -d` runs
on that engine as its peer. Without it, `--engine-mode engine` is forced on the first engine
and the plain compose run above is the peer. Target: engine mode <= 1.5x its peer.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import _common

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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    image = os.environ.get("BENCH_IMAGE", "devsecrets-test-busybox")
    bindir = _common.normal_install()
    devsecrets = str(bindir / "devsecrets")
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory(dir="/dev/shm") as rt:
        root = Path(tmp)
        plain_dir, secure_dir = root / "plain-project", root / "devsecrets-project"
        (plain_dir / "plain").mkdir(parents=True)
        secure_dir.mkdir()
        env = {
            **os.environ,
            "HOME": tmp,
            "DEVSECRETS_RUNTIME_DIR": f"{rt}/runtime",
            "PATH": f"{bindir}:{os.environ['PATH']}",
        }
        for var in ("COMPOSE_FILE", "COMPOSE_PROJECT_NAME", "PYTHONPATH", "SOPS_AGE_KEY_FILE"):
            env.pop(var, None)
        _common.run([devsecrets, "init"], env=env, cwd=secure_dir)
        for i in range(SECRETS):
            value = os.urandom(16).hex().encode()
            (plain_dir / "plain" / f"secret_{i}").write_bytes(value)
            _common.run([devsecrets, "set", f"secret_{i}"], env=env, cwd=secure_dir, stdin=value)
        (plain_dir / "compose.yaml").write_text(json.dumps(stack(image, external=False)))
        (secure_dir / "docker-stack.yml").write_text(json.dumps(stack(image, external=True)))
        plain_down = ["docker", "compose", "-p", "benchplain", "down", "-t", "0"]
        ours_down = [devsecrets, "down", "-p", "benchours", "-t", "0"]

        def up_then_down(up: list[str], down: list[str], cwd: Path):
            def once(r: int) -> float:
                elapsed = _common.run(up, env=env, cwd=cwd)
                subprocess.run(down, cwd=cwd, env=env, check=True, capture_output=True)
                return elapsed

            return once

        plain = "docker compose up -d (plaintext files)"
        ours = "devsecrets up -d (store, tmpfs)"
        contestants = {
            plain: up_then_down(
                ["docker", "compose", "-p", "benchplain", "up", "-d"], plain_down, plain_dir
            ),
            ours: up_then_down([devsecrets, "up", "-p", "benchours", "-d"], ours_down, secure_dir),
            "floor: docker compose config (devsecrets stack)": _common.command(
                ["docker", "compose", "-f", "docker-stack.yml", "config", "--format", "json"],
                env=env,
                cwd=secure_dir,
            ),
            "floor: python3 -c pass": _common.command(
                [str(bindir / "python3"), "-c", "pass"], env=env
            ),
        }
        engine = engine_contestants(env, devsecrets, plain_dir, secure_dir, image)
        contestants.update(engine.contestants)
        print(f"bench_up: {_common.machine()}; {SERVICES} services x {SECRETS} secrets")
        print(f"{args.runs} rounds (plus one warm-up), order alternating; devsecrets {bindir}")
        try:
            samples = _common.paired(contestants, args.runs)
        finally:
            subprocess.run(plain_down, cwd=plain_dir, env=env, check=False, capture_output=True)
            subprocess.run(ours_down, cwd=secure_dir, env=env, check=False, capture_output=True)
            engine.cleanup()
    _common.report(samples)
    _common.ratio(samples, ours, plain, "<= 1.3")
    _common.ratio(samples, engine.ours, engine.peer or plain, "<= 1.5")
    print(f"  at the end: {_common.machine()}")


class Engine:
    """The engine-mode contestant, its peer and how to clean up after them."""

    def __init__(self) -> None:
        self.contestants: dict = {}
        self.ours = ""
        self.peer = ""
        self.cleanup = lambda: None


def engine_contestants(
    env: dict[str, str], devsecrets: str, plain_dir: Path, secure_dir: Path, image: str
) -> Engine:
    engine = Engine()
    isolated = os.environ.get("DEVSECRETS_ISOLATED_DOCKER_HOST", "")
    engine_env = {**env, "DEVSECRETS_HELPER_IMAGE": image}
    up = [devsecrets, "up", "-p", "benchengine", "-d"]
    if isolated:
        engine_env["DOCKER_HOST"] = isolated
        engine.ours = "devsecrets up -d (engine mode, detected)"
        engine.peer = "docker compose up -d (same engine)"
    else:
        up += ["--engine-mode", "engine"]
        engine.ours = "devsecrets up -d (engine mode, forced)"
    down = [devsecrets, "down", "-p", "benchengine", "-t", "0"]
    plain_up = ["docker", "compose", "-p", "benchisolated", "up", "-d"]
    plain_down = ["docker", "compose", "-p", "benchisolated", "down", "-t", "0"]

    def once(up: list[str], down: list[str], cwd: Path):
        def run(r: int) -> float:
            elapsed = _common.run(up, env=engine_env, cwd=cwd)
            if r == -1 and up[0] == devsecrets:  # the warm-up: the mode is the one meant
                check = subprocess.run(up, env=engine_env, cwd=cwd, capture_output=True)
                if b"devsecrets: engine mode:" not in check.stderr:
                    sys.exit(f"bench: not in engine mode: {check.stderr[-300:]!r}")
            subprocess.run(down, cwd=cwd, env=engine_env, check=True, capture_output=True)
            return elapsed

        return run

    engine.contestants[engine.ours] = once(up, down, secure_dir)
    if engine.peer:
        engine.contestants[engine.peer] = once(plain_up, plain_down, plain_dir)

    def cleanup() -> None:
        subprocess.run(down, cwd=secure_dir, env=engine_env, check=False, capture_output=True)
        if engine.peer:
            subprocess.run(
                plain_down, cwd=plain_dir, env=engine_env, check=False, capture_output=True
            )

    engine.cleanup = cleanup
    return engine


if __name__ == "__main__":
    main()
