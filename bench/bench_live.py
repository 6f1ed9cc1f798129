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
import ctypes
import os
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
IN_MOVED_TO = 0x80


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


class Renames:
    """inotify on a directory: the wall-clock time each IN_MOVED_TO of `name` was read."""

    def __init__(self, directory: Path, name: str) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.fd = libc.inotify_init1(os.O_CLOEXEC)
        if self.fd < 0 or libc.inotify_add_watch(self.fd, bytes(directory), IN_MOVED_TO) < 0:
            sys.exit("bench: inotify is not available")
        self.name = name.encode()
        self.seen: list[float] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            data = os.read(self.fd, 65536)
            now = time.time()
            offset = 0
            while offset < len(data):
                _, _, _, length = struct.unpack_from("iIII", data, offset)
                name = data[offset + 16 : offset + 16 + length].rstrip(b"\0")
                offset += 16 + length
                if name == self.name:
                    self.seen.append(now)

    def first_after(self, start: float, timeout: float = 5.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            later = [t for t in self.seen if t >= start]
            if later:
                return min(later)
            time.sleep(0.001)
        sys.exit("bench: the store file was never replaced")


def container_pid(project: str) -> int:
    for _ in range(600):
        filters = ["--filter", f"label=com.docker.compose.project={project}"]
        ids = subprocess.run(
            ["docker", "ps", "-q", *filters], capture_output=True, text=True, check=True
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


def wait_visible(
    path: Path, old: bytes, new: bytes, timeout: float = 10.0, *, strict: bool = True
) -> float:
    """Poll (every ~0.2 ms) until `path` holds `new`; returns when it was first seen (wall
    clock). `strict`: anything but `old` or `new` on the way (a torn, empty or missing read)
    ends the bench. (compose watch's sync is not held to that: it rewrites files in place.)"""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            seen = path.read_bytes()
        except OSError:
            if strict:
                sys.exit(f"bench: {path} was missing")
            seen = b""
        if seen == new:
            return time.time()
        if strict and seen != old:
            sys.exit(f"bench: {path} held neither the old nor the new value")
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
        store_file = ours / ".devsecrets" / "x.sops.yaml"
        renames = Renames(store_file.parent, store_file.name)
        from_store: list[float] = []
        from_launch: list[float] = []
        exited_first = 0
        theirs_ms: list[float] = []
        try:
            ours_file = Path(f"/proc/{container_pid('benchlive')}/root/run/secrets/x")
            theirs_file = Path(f"/proc/{container_pid('benchwatch')}/root/run/sync/x")
            time.sleep(3)  # both watchers settled
            old = b"initial"
            for trial in range(args.trials):
                value = f"value-{trial}-{os.urandom(4).hex()}".encode()
                launched = time.time()
                setter = subprocess.Popen([*devsecrets, "set", "x"], cwd=ours, env=env,
                                          stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL)  # fmt: skip
                assert setter.stdin is not None
                setter.stdin.write(value)
                setter.stdin.close()
                visible = wait_visible(ours_file, old, value)
                exited_first += setter.poll() is not None
                if setter.wait(timeout=30) != 0:
                    sys.exit("bench: devsecrets set failed")
                replaced = store_file.stat().st_ctime_ns / 1e9
                event = renames.first_after(launched)
                if not launched <= replaced <= event + 0.001:
                    sys.exit("bench: the store file's ctime is not between launch and rename")
                from_store.append((visible - replaced) * 1000)
                from_launch.append((visible - launched) * 1000)

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
    report(args.trials, from_store, from_launch, exited_first, theirs_ms)


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
        print(
            f"  {name:<44} p50 {statistics.median(samples):7.1f} ms"
            f"   p95 {percentile(samples, 0.95):7.1f} ms   max {max(samples):7.1f} ms"
        )
    print(f"  `set` had exited before the value was visible in {exited_first} of {trials} trials")
    print("  every read was the old or the new value (no torn, empty or missing read)")
    theirs = statistics.median(theirs_ms)
    print(
        f"p50 ratio compose watch / devsecrets: {theirs / statistics.median(from_store):.0f}x "
        f"from the store file, {theirs / statistics.median(from_launch):.1f}x from `set` launched"
    )


if __name__ == "__main__":
    main()
