"""Processes and signals: the plaintext guard, the foreground child, `watch`'s stop.

The guard: a process holding secret values leaves none behind when it stops. Core dumps off
for this process and its children (`coredump.no_core_dumps`, re-exported here), and SIGINT,
SIGTERM, SIGHUP and SIGQUIT turned into `Interrupted`, which unwinds through the callers'
`finally` blocks that wipe the runtime files. The foreground child (compose, `run`'s command)
gets TERM/HUP forwarded and is waited for, so cleanup runs after it stopped. Never prints.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType

from devsecrets.coredump import no_core_dumps as no_core_dumps  # re-exported
from devsecrets.errors import ComposeError, reason

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


class Interrupted(KeyboardInterrupt):
    """A stop signal arrived; the CLI reports it like Ctrl-C (exit 130) after cleanup."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def plaintext_guard() -> Iterator[None]:
    """While inside: no core dumps, and the first stop signal raises `Interrupted` (later
    ones are ignored, so a second Ctrl-C cannot cut the cleanup short)."""
    no_core_dumps()
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread; its caller has its own
        return
    fired: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if not fired:
            fired.append(signum)
            raise Interrupted(signum)

    previous = {s: signal.signal(s, on_signal) for s in SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def run_editor(argv: Sequence[str]) -> int:
    """Run the user's editor in the foreground and return its exit code.

    A stop signal that lands while the child is being started must not leave it running
    without us (it would outlive the copy it edits and hold our stderr open): the signals are
    blocked around the spawn, so when one is delivered we know the pid and stop the child on
    the way out. The child starts with an empty signal mask and default SIGPIPE."""
    previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    try:
        pid = os.posix_spawnp(
            argv[0],
            list(argv),
            os.environ,
            setsigmask=(),
            setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
        )
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)  # a pending signal fires here
    reaped = False
    try:
        _, status = os.waitpid(pid, 0)
        reaped = True
        return os.waitstatus_to_exitcode(status)
    finally:
        if not reaped:
            _stop_child(pid)


def _stop_child(pid: int) -> None:
    """TERM, a short grace, then KILL; always reaped."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    for _ in range(20):
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


Stopper = Callable[[], None]


def run_foreground(
    argv: Sequence[str],
    env: Mapping[str, str],
    cwd: Path,
    while_running: Callable[[], Stopper | None] | None = None,
) -> int:
    """Run compose as a child until it exits; see `wait_forwarding`."""
    try:
        child = subprocess.Popen(list(argv), env=dict(env), cwd=cwd)
    except OSError as e:
        raise ComposeError(f"could not run {argv[0]}: {reason(e)}") from e
    return wait_forwarding(child, while_running)


def wait_forwarding(
    child: subprocess.Popen[bytes],
    while_running: Callable[[], Stopper | None] | None = None,
) -> int:
    """Wait for a foreground child; Ctrl-C reaches it through the terminal, SIGTERM and
    SIGHUP we forward (and SIGINT when not on a terminal).

    `while_running` starts something (the watcher) once the child runs and returns the
    function that stops it. We wait for the child in every case, so the caller's cleanup
    runs after it has stopped. Returns its exit code (negative: killed by that signal)."""

    def forward(signum: int, frame: FrameType | None) -> None:
        child.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGHUP)}
    # On a terminal, Ctrl-C already reaches the child (same process group); forwarding it
    # too would count as a second Ctrl-C, which compose takes as "kill now".
    on_int = signal.SIG_IGN if sys.stdin.isatty() else forward
    previous[signal.SIGINT] = signal.signal(signal.SIGINT, on_int)
    stopper = None
    try:
        if while_running is not None:
            stopper = while_running()
        return child.wait()
    finally:
        if stopper is not None:
            stopper()
        if child.poll() is None:
            child.terminate()
            child.wait()
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


@contextlib.contextmanager
def stop_signals() -> Iterator[Callable[[], None]]:
    """For `watch`: while the block runs, SIGINT and SIGTERM only end the wait; yields the
    function that blocks until one arrives. The previous handlers come back afterwards."""
    done = threading.Event()
    previous = {s: signal.signal(s, lambda *_: done.set()) for s in (signal.SIGINT, signal.SIGTERM)}

    def wait() -> None:
        while not done.wait(3600):
            pass

    try:
        yield wait
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def is_alive(pid: object) -> bool:
    """Whether a process with this pid exists (one we may not signal counts as alive)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
