#!/usr/bin/env python3
"""Latency of a secret change reaching a running container, side by side with compose watch.

devsecrets, with a foreground `devsecrets up` watching, two clocks per trial:
- from the store file: from the moment `x.sops.yaml` is replaced in the store (the kernel's
  ctime of the renamed file, which is stamped at the rename and can only be early; an inotify
  watch on the store confirms the rename happened no later) to the new bytes being readable
  at /run/secrets/x inside the container;
- from `set` launched: from just before `devsecrets set x` is started to the same moment.
"Readable inside" is read through /proc/<pid>/root, i.e. the container's own mount namespace,
polled every ~0.2 ms; every read is checked to be the old or the new value (never torn,
empty or missing).
compose: the same kind of file, changed on the host (write + rename, as an editor would),
synced by `docker compose watch` (`develop.watch` action `sync`); the clock starts before the
write. Trials alternate between the two.

devsecrets runs from a normal install (package copied into a fresh venv with its metadata and
console script, bytecode compiled, as pip installs a wheel), not the editable checkout.
Prints p50/p95/max and the p50 ratios. Needs an engine, compose and BENCH_IMAGE (default
devsecrets-test-busybox, built by the tests). Usage: bench_live.py [--trials N]
"""

from __future__ import annotations

import argparse
import compileall
import os
import shutil
import signal
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import yaml
from _common import Live, container_pid, latency_line, wait_visible

REPO = Path(__file__).resolve().parent.parent


def install(venv: Path) -> Path:
    """A wheel-like install of this checkout into `venv`; returns its console script."""
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.check_output(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            text=True,
            env=clean,
        ).strip()
    )
    shutil.copytree(REPO / "devsecrets", site / "devsecrets")
    compileall.compile_dir(site / "devsecrets", quiet=1)
    init = (REPO / "devsecrets" / "__init__.py").read_text()
    __version__ = init.split('__version__ = "')[1].split('"')[0]
    meta = site / f"devsecrets-{__version__}.dist-info"
    meta.mkdir()
    (meta / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: devsecrets\nVersion: {__version__}\n"
    )
    (meta / "entry_points.txt").write_text(
        "[console_scripts]\ndevsecrets = devsecrets.entry:main\n"
    )
    # the runtime dependencies come from this interpreter's site-packages, as a plain path
    # (not a site dir: its .pth files, such as an editable devsecrets, are not processed)
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    script = venv / "bin" / "devsecrets"
    script.write_text(
        f"#!{python}\nimport sys\nfrom devsecrets.entry import main\nsys.exit(main())\n"
    )
    script.chmod(0o755)
    where = subprocess.check_output(
        [python, "-c", "import devsecrets; print(devsecrets.__file__)"],
        text=True,
        env=clean,
        cwd=venv,
    )
    assert where.startswith(str(site)), f"bench: imports devsecrets from {where}"
    return script


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=100)
    args = parser.parse_args()
    image = os.environ.get("BENCH_IMAGE", "devsecrets-test-busybox")
    service = {
        "image": image,
        "network_mode": "none",
        "stop_signal": "SIGKILL",
        "command": ["sleep", "3600"],
    }
    with (
        tempfile.TemporaryDirectory() as tmp,
        tempfile.TemporaryDirectory(dir="/dev/shm") as rt,
    ):
        root = Path(tmp)
        devsecrets = [str(install(root / "venv"))]
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
        env.pop("PYTHONPATH", None)
        env.setdefault("DOCKER_CONFIG", str(Path.home() / ".docker"))

        def run(*argv: str, value: bytes | None = None) -> None:
            subprocess.run([*devsecrets, *argv], cwd=ours, env=env, input=value, check=True,
                           capture_output=True)  # fmt: skip

        run("init")
        run("set", "x", value=b"initial")
        stack = {
            "services": {"app": {**service, "secrets": ["x"]}},
            "secrets": {"x": {"external": True}},
        }
        (ours / "docker-stack.yml").write_text(yaml.safe_dump(stack))
        (theirs / "src" / "x").write_bytes(b"initial")
        sync = {"action": "sync", "path": "./src", "target": "/run/sync"}
        compose = {"services": {"app": {**service, "develop": {"watch": [sync]}}}}
        (theirs / "compose.yaml").write_text(yaml.safe_dump(compose))
        watch_env = {**env, "COMPOSE_PROJECT_NAME": "benchwatch"}
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL,
                 "stdin": subprocess.DEVNULL}  # fmt: skip

        up = subprocess.Popen([*devsecrets, "up"], cwd=ours, env=env, **quiet)  # type: ignore[call-overload]
        subprocess.run(["docker", "compose", "up", "-d"], cwd=theirs, env=watch_env, check=True,
                       capture_output=True)  # fmt: skip
        watch = subprocess.Popen(  # type: ignore[call-overload]
            ["docker", "compose", "watch", "--no-up"], cwd=theirs, env=watch_env, **quiet
        )
        theirs_ms: list[float] = []
        live = None
        try:
            ours_file = Path(f"/proc/{container_pid('benchlive')}/root/run/secrets/x")
            live = Live(devsecrets, ours, env, ours_file)
            theirs_file = Path(f"/proc/{container_pid('benchwatch')}/root/run/sync/x")
            time.sleep(3)  # both watchers settled
            old = b"initial"
            for trial in range(args.trials):
                value = f"value-{trial}-{os.urandom(4).hex()}".encode()
                live.trial(value)

                staged = theirs / "src" / ".x.tmp"
                start = time.time()
                staged.write_bytes(value)
                staged.rename(theirs / "src" / "x")
                theirs_ms.append(
                    (wait_visible(theirs_file, old, value, strict=False) - start) * 1000
                )
                old = value
        finally:
            watch.send_signal(signal.SIGINT)
            watch.wait(timeout=30)
            up.send_signal(signal.SIGTERM)
            up.wait(timeout=60)
            subprocess.run(["docker", "compose", "down", "-t", "0"], cwd=theirs, env=watch_env,
                           capture_output=True)  # fmt: skip
    assert live is not None
    report(args.trials, live.from_store, live.from_launch, live.exited_first, theirs_ms)


def report(
    trials: int,
    from_store: list[float],
    from_launch: list[float],
    exited_first: int,
    theirs_ms: list[float],
) -> None:
    print(f"trials: {trials} each, alternating; devsecrets from a normal (non-editable) install")
    rows = (
        ("devsecrets: store file replaced -> visible", from_store),
        ("devsecrets: `set` launched -> visible", from_launch),
        ("compose watch sync: write -> visible", theirs_ms),
    )
    for name, samples in rows:
        print(latency_line(name, samples))
    print(f"  `set` had exited before the value was visible in {exited_first} of {trials} trials")
    print("  every read was the old or the new value (no torn, empty or missing read)")
    theirs = statistics.median(theirs_ms)
    print(
        f"p50 ratio compose watch / devsecrets: {theirs / statistics.median(from_store):.0f}x "
        f"from the store file, {theirs / statistics.median(from_launch):.1f}x from `set` launched"
    )


if __name__ == "__main__":
    main()
