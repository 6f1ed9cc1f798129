"""Processes and signals: the plaintext guard, the foreground child, `watch`'s stop.

The guard: a process holding secret values leaves none behind when it stops. Core dumps off
for this process and its children (`coredump.no_core_dumps`, re-exported here), and SIGINT,
SIGTERM, SIGHUP and SIGQUIT turned into `Interrupted`, which unwinds through the callers'
`finally` blocks that wipe the runtime files. Our handler is installed even where the parent
left a signal ignored (`nohup`, a shell's background job): otherwise a hang-up would be lost
and the process would never wipe. While a foreground child runs (compose, `run`'s command) or
`watch` waits, `on_stop` blocks get the signals instead (forward, end the wait); the first
signal still counts, so later ones cannot cut the cleanup short, and the CLI exits 128+N.
Never prints.
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
from types import FrameType
from typing import Any

from devsecrets.coredump import no_core_dumps as no_core_dumps  # re-exported

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


class Interrupted(KeyboardInterrupt):
    """A stop signal arrived; the CLI reports it like Ctrl-C (exit 128+N) after cleanup."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class _Stop:
    """The process's stop signals. The first one is kept (`signum`); what happens to each
    depends on the block we are in: by default (`plaintext_guard`) the first raises
    `Interrupted` and later ones are ignored; inside `on_stop(handler)` every one goes to
    the handler (forward it to a child, end a wait) and nothing is raised. A signal handled
    by an `on_stop` block still counts as the first: after the block, while the caller wipes,
    later signals are ignored instead of cutting the cleanup short."""

    signum: int | None = None
    handler: Callable[[int, bool], None] | None = None
    depth = 0  # plaintext_guard nesting: the outermost one resets and restores


_stop = _Stop()


def _on_signal(signum: int, frame: FrameType | None) -> None:
    first = _stop.signum is None
    if first:
        _stop.signum = signum
    if _stop.handler is not None:
        _stop.handler(signum, first)
    elif first:
        raise Interrupted(signum)


def _install() -> dict[int, Any]:
    """Our handler on every stop signal, including one the parent left ignored (`nohup`,
    a shell's background job): a hang-up or Ctrl-\\ must still wipe and end the process."""
    return {s: signal.signal(s, _on_signal) for s in SIGNALS}


def _restore(previous: Mapping[int, Any]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


def stopped() -> int | None:
    """The first stop signal received inside the current guard, if any."""
    return _stop.signum


@contextlib.contextmanager
def plaintext_guard() -> Iterator[None]:
    """While inside: no core dumps, and the first stop signal raises `Interrupted` (later
    ones are ignored, so a second Ctrl-C cannot cut the cleanup short)."""
    no_core_dumps()
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread; its caller has its own
        return
    outermost = _stop.depth == 0
    previous = _install() if outermost else {}
    if outermost:
        _stop.signum, _stop.handler = None, None
    _stop.depth += 1
    try:
        yield
    finally:
        _stop.depth -= 1
        if outermost:
            _restore(previous)
            _stop.signum, _stop.handler = None, None


@contextlib.contextmanager
def on_stop(handler: Callable[[int, bool], None]) -> Iterator[None]:
    """While inside, each stop signal calls `handler(signum, first)` instead of raising.
    Outside a `plaintext_guard` (a test calling the core), our handler is installed for the
    block and the previous ones come back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = _install() if _stop.depth == 0 else {}
    before = _stop.handler
    _stop.handler = handler
    try:
        yield
    finally:
        _stop.handler = before
        if previous:
            _restore(previous)
            _stop.signum = None


def run_editor(argv: Sequence[str]) -> int:
    """Run the user's editor in the foreground and return its exit code.

    A stop signal that lands while the child is being started must not leave it running
    without us (it would outlive the copy it edits and hold our stderr open): the signals are
    blocked around the spawn, so when one is delivered we know the pid and stop the child on
    the way out. The child starts with an empty signal mask and default SIGPIPE."""
    pid: int | None = None
    reaped = False
    previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    try:
        try:
            pid = os.posix_spawnp(
                argv[0],
                list(argv),
                os.environ,
                setsigmask=(),
                setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
            )
        finally:  # a signal that came meanwhile fires here: the pid is known, the outer
            signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)  # finally stops it
        _, status = os.waitpid(pid, 0)
        reaped = True
        return os.waitstatus_to_exitcode(status)
    finally:
        if pid is not None and not reaped:
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


def run_forwarding(start: Callable[[], subprocess.Popen[bytes]]) -> int:
    """`start()` a foreground child (`run`'s command) and wait for it as `wait_forwarding`
    does. The signals are ours before it starts: one that comes while it starts is passed on
    once it runs (it never runs on without us)."""
    came: list[int] = []
    with on_stop(lambda signum, first: came.append(signum)):
        child = start()
        for signum in came:
            child.send_signal(signum)
        return wait_forwarding(child)


def wait_forwarding(
    child: subprocess.Popen[bytes],
    while_running: Callable[[], Stopper | None] | None = None,
) -> int:
    """Wait for a foreground child (`run`'s command), passing our stop signals on to it.

    On a terminal, Ctrl-C and Ctrl-\\ already reach it (same process group): forwarding
    them too would count twice. `while_running` starts something once the child runs and
    returns the function that stops it. We wait for the child in every case, so the caller's
    cleanup runs after it has stopped. Returns its exit code (negative: killed by that
    signal)."""
    tty = sys.stdin.isatty()

    def forward(signum: int, first: bool) -> None:
        if child.poll() is None and not (tty and signum in (signal.SIGINT, signal.SIGQUIT)):
            child.send_signal(signum)

    stopper = None
    with on_stop(forward):
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


@contextlib.contextmanager
def stop_signals() -> Iterator[Callable[[], int]]:
    """For `watch`: while the block runs, SIGINT, SIGTERM, SIGHUP and SIGQUIT only end the
    wait; yields the function that blocks until one arrives and returns it."""
    done = threading.Event()
    got: list[int] = []

    def stop(signum: int, first: bool) -> None:
        got.append(signum)
        done.set()

    def wait() -> int:
        while not done.wait(3600):
            pass
        return got[0]

    with on_stop(stop):
        yield wait


def descendants(pid: int) -> list[int]:
    """The processes below `pid` (children first), from /proc; [] where there is none."""
    parents: dict[int, list[int]] = {}
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError, ValueError, IndexError):
                with open(f"/proc/{entry.name}/stat", "rb") as f:
                    stat = f.read()
                ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
                parents.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_tree(child: subprocess.Popen[bytes]) -> None:
    """SIGKILL a child and everything below it (the compose plugin under `docker`), then
    reap the child. For a child that did not stop when asked."""
    for pid in [*descendants(child.pid), child.pid]:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    child.wait()


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
