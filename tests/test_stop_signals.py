"""Every process that holds plaintext stops on SIGINT, SIGTERM, SIGHUP and SIGQUIT: sent to
the process or to its process group, early or late, and also when its parent left the signal
ignored (`nohup`; a non-interactive shell's background job ignores SIGINT and SIGQUIT). It
wipes what it wrote, a second signal does not cut that short, and it exits 128+N."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import (
    Lines,
    User,
    devsecrets,
    devsecrets_cmd,
    project_containers,
    start_foreground_up,
)

from devsecrets.process import descendants

STOP = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT]
CANARY = b"canary-stopsig-5e21"


def ignoring(*signums: int):
    """A preexec_fn: the child starts with these signals ignored, as under nohup or `cmd &`."""

    def setup() -> None:
        for signum in signums:
            signal.signal(signum, signal.SIG_IGN)

    return setup


def alive(pid: int) -> bool:
    """Running: not gone and not a zombie (an orphan's reaper may be slow, or never come)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] not in "ZX"
    except OSError:
        return False


def holding_canary(*roots: Path) -> list[str]:
    found = []
    for root in roots:
        if root.exists():
            found += [str(p) for p in root.rglob("*") if p.is_file() and CANARY in p.read_bytes()]
    return found


# -- the mechanism ------------------------------------------------------------------------------

WAITER = """
import signal, sys, time
from devsecrets import process
with process.plaintext_guard():
    with process.stop_signals() as wait:
        print("ready", flush=True)
        got = wait()
    print("cleaning", flush=True)
    time.sleep(1.5)  # the test signals again meanwhile: the cleanup must run to its end
    print("cleaned", flush=True)
sys.exit(128 + got)
"""


@pytest.mark.parametrize("signum", STOP)
def test_a_stop_signal_ends_the_wait_and_a_second_cannot_cut_the_cleanup_short(signum):
    proc = subprocess.Popen(
        [sys.executable, "-c", WAITER],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        preexec_fn=ignoring(*STOP),  # noqa: PLW1509 - the point: a parent that ignored them
    )
    try:
        assert proc.stdout.readline() == b"ready\n"
        proc.send_signal(signum)
        assert proc.stdout.readline() == b"cleaning\n"
        proc.send_signal(signal.SIGTERM if signum != signal.SIGTERM else signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert out == b"cleaned\n", err.decode()
    assert proc.returncode == 128 + signum, err.decode()


SPAWN_RACE = """
import os, signal, subprocess, sys, time
from devsecrets import hostrun, process
spawned = []
def signalled(start):
    def wrapper(*args, **kwargs):
        child = start(*args, **kwargs)
        spawned.append(child if isinstance(child, int) else child.pid)
        os.kill(os.getpid(), signal.SIGTERM)  # lands while the child is being started
        return child
    return wrapper
if sys.argv[1] == "editor":
    os.posix_spawnp = signalled(os.posix_spawnp)
    start = lambda: process.run_editor(["sleep", "30"])
else:
    hostrun.subprocess.Popen = signalled(subprocess.Popen)
    start = lambda: hostrun.run(["sleep", "30"], {}, os.environ, ".", hostrun.Path(sys.argv[2]))
try:
    with process.plaintext_guard():
        code = start()
except KeyboardInterrupt:
    code = "interrupted"
time.sleep(0.2)
alive = os.path.exists(f"/proc/{spawned[0]}") and "zombie" not in open(f"/proc/{spawned[0]}/status").read()
if alive:
    os.kill(spawned[0], signal.SIGKILL)
print(code, "child left running" if alive else "child stopped", flush=True)
"""


@pytest.mark.parametrize("what", ["editor", "run"])
def test_a_signal_while_the_child_starts_never_leaves_it_running(what, tmp_path, runtime_dir):
    """The signal comes between the spawn and the wait: the editor or `run`'s command is
    stopped, not left running on its own (it would hold our stderr and outlive the wipe)."""
    root = runtime_dir
    root.mkdir(mode=0o700)
    proc = subprocess.run(
        [sys.executable, "-c", SPAWN_RACE, what, str(root)],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.stdout.decode().split()[-2:] == ["child", "stopped"], proc.stderr.decode()


# -- edit and run (no engine) -------------------------------------------------------------------


def _edit(alice: User, tmp_path: Path, runtime_dir: Path, signum: int) -> subprocess.Popen:
    script = tmp_path / "editor.sh"
    script.write_text(f'#!/bin/sh\necho "$1" > {tmp_path}/editor.log\nexec sleep 30\n')
    script.chmod(0o755)
    env = {
        **alice.subprocess_env(),
        "EDITOR": str(script),
        "DEVSECRETS_RUNTIME_DIR": str(runtime_dir),
    }
    return subprocess.Popen(
        [*devsecrets_cmd(), "--store", str(alice.store), "edit", "x"],
        env=env,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=ignoring(signum),  # noqa: PLW1509
    )


def disposition(pid: int, signum: int) -> str:
    """'ignored', 'caught' or 'default', from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    bit = 1 << (signum - 1)
    if int(fields["SigIgn"], 16) & bit:
        return "ignored"
    return "caught" if int(fields["SigCgt"], 16) & bit else "default"


def until_not_ignored(proc: subprocess.Popen, signum: int) -> list[str]:
    """Poll the child's disposition of `signum` until it is no longer ignored; what was seen."""
    seen = ["ignored"]
    while proc.poll() is None and seen[-1] == "ignored":
        with contextlib.suppress(OSError, KeyError):
            seen.append(disposition(proc.pid, signum))
    return seen


@pytest.mark.parametrize("signum", STOP)
def test_edit_stops_on_a_signal_its_parent_ignored_even_while_starting(
    alice: User, tmp_path: Path, runtime_dir: Path, signum
):
    """Before the guard is in place (Python still importing), a stop signal the parent left
    ignored takes its default action: it is not lost, leaving an edit nobody can stop."""
    alice.run("set", "x", input=CANARY)
    proc = _edit(alice, tmp_path, runtime_dir, signum)
    try:
        seen = until_not_ignored(proc, signum)
        assert seen[-1] == "default", seen[-5:]  # not ignored, and not yet the guard's
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=20)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == -signum, err.decode()
    assert holding_canary(runtime_dir) == []
    assert alice.run("get", "x").stdout == CANARY


@pytest.mark.parametrize("group", [False, True], ids=["process", "group"])
@pytest.mark.parametrize("signum", STOP)
def test_edit_stops_on_a_signal_its_parent_ignored_once_the_editor_runs(
    alice: User, tmp_path: Path, runtime_dir: Path, signum, group
):
    alice.run("set", "x", input=CANARY)
    proc = _edit(alice, tmp_path, runtime_dir, signum)
    log = tmp_path / "editor.log"
    deadline = time.monotonic() + 30
    while not log.exists() or not log.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, "editor never started"
        time.sleep(0.05)
    copy = Path(log.read_text().strip())
    assert copy.read_bytes() == CANARY
    (os.killpg if group else os.kill)(proc.pid, signum)
    try:
        _, err = proc.communicate(timeout=20)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 128 + signum, err.decode()
    assert not copy.exists()
    assert holding_canary(runtime_dir) == []


# -- up and watch (a real engine) ---------------------------------------------------------------


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.parametrize("group", [False, True], ids=["process", "group"])
@pytest.mark.parametrize("signum", STOP)
def test_up_stops_compose_wipes_and_exits_128_plus_n(
    alice: User, stack, runtime_dir: Path, signum, group
):
    """To the group, as a terminal sends them: compose's docker CLI dies at once on SIGHUP
    and SIGQUIT, and its plugin dumps goroutines on SIGQUIT, leaving the containers running;
    devsecrets stops them itself before it wipes."""
    env, name = stack
    proc = start_foreground_up(alice.project, env, name, 1, new_session=True)
    (os.killpg if group else os.kill)(proc.pid, signum)
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 128 + signum, err.decode()
    assert project_containers(name) == []
    assert holding_canary(runtime_dir, alice.project) == []
    assert CANARY not in err


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGQUIT])
def test_up_stops_on_a_signal_its_parent_ignored(alice: User, stack, runtime_dir: Path, signum):
    env, name = stack
    proc = subprocess.Popen(
        [*devsecrets_cmd(), "up"],
        cwd=alice.project,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=ignoring(signum),  # noqa: PLW1509
    )
    try:
        until_not_ignored(proc, signum)
        proc.send_signal(signum)  # early: while Python imports, or once the guard is in place
        _, err = proc.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode in (-signum, 128 + signum), err.decode()
    assert project_containers(name) == []
    assert holding_canary(runtime_dir) == []


@pytest.mark.docker
@pytest.mark.slow
def test_signals_during_ups_cleanup_do_not_cut_it_short(alice: User, stack, runtime_dir: Path):
    """Ctrl-C, then more stop signals while compose stops and the secrets are wiped (an
    impatient user, a supervisor's TERM): compose gets them (three make it give up, "forcefully
    exiting"), devsecrets still stops the containers itself and wipes."""
    env, name = stack
    proc = start_foreground_up(alice.project, env, name, 1, new_session=True)
    proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + 60
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=5)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    # 130 for the Ctrl-C; or killed by a TERM that came once the cleanup was over and the
    # guard gone (what was left to do then was the exit itself)
    assert proc.returncode in (128 + signal.SIGINT, -signal.SIGTERM), err.decode()
    assert project_containers(name) == []
    assert holding_canary(runtime_dir) == []


@pytest.mark.docker
@pytest.mark.slow
def test_watch_ends_on_every_stop_signal_even_one_its_parent_ignored(
    alice: User, stack, runtime_dir: Path
):
    env, name = stack
    started = devsecrets(["up", "-d"], cwd=alice.project, env=env)
    assert started.returncode == 0, started.stderr.decode()
    try:
        for signum in STOP:
            for group in (False, True):
                watch = subprocess.Popen(
                    [*devsecrets_cmd(), "watch"],
                    cwd=alice.project,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    preexec_fn=ignoring(*STOP),  # noqa: PLW1509
                )
                lines = Lines(watch.stderr)
                try:
                    lines.wait_for("Ctrl-C to stop")
                    (os.killpg if group else os.kill)(watch.pid, signum)
                    code = watch.wait(timeout=30)
                finally:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(watch.pid, signal.SIGKILL)
                assert code == 128 + signum, (signum, group, lines.text())
                assert "Traceback" not in lines.text()
        assert len(project_containers(name)) == 1  # stopping a watch leaves the stack running
    finally:
        assert devsecrets(["down"], cwd=alice.project, env=env).returncode == 0
    assert holding_canary(runtime_dir) == []


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGQUIT])
def test_a_compose_plugin_its_cli_left_running_is_stopped(
    alice: User, stack, runtime_dir: Path, signum
):
    """A terminal's hang-up or Ctrl-\\ reaches compose's docker CLI before devsecrets has
    run its handler: the CLI dies at once and its plugin runs on, still attached and holding
    our output pipes. devsecrets still stops the containers (and so the plugin) and exits
    promptly."""
    env, name = stack
    proc = start_foreground_up(alice.project, env, name, 1, new_session=True)
    plugin = None
    try:
        cli, plugin = descendants(proc.pid)[:2]  # docker, then its compose plugin
        assert "compose" in Path(f"/proc/{plugin}/cmdline").read_text()
        os.kill(cli, signum)
        while alive(cli):  # it dies at once; its plugin runs on
            time.sleep(0.01)
        assert alive(plugin)
        started = time.monotonic()
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
        took = time.monotonic() - started
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 128 + signum, err.decode()
    assert not alive(plugin)
    assert took < 15, took
    assert project_containers(name) == []
    assert holding_canary(runtime_dir) == []
