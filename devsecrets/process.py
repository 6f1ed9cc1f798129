"""The plaintext guard: a process holding secret values leaves none behind when it stops.

Input: nothing. Output: core dumps off for this process and its children (`RLIMIT_CORE` 0,
and `PR_SET_DUMPABLE` 0 so not even a core_pattern pipe gets one), and SIGINT, SIGTERM,
SIGHUP and SIGQUIT turned into `Interrupted`, which unwinds through the callers' `finally`
blocks that wipe the runtime files. Never prints.
"""

from __future__ import annotations

import contextlib
import ctypes
import resource
import signal
import threading
from collections.abc import Iterator
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
_PR_SET_DUMPABLE = 4  # <linux/prctl.h>


class Interrupted(KeyboardInterrupt):
    """A stop signal arrived; the CLI reports it like Ctrl-C (exit 130) after cleanup."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def no_core_dumps() -> None:
    """No core file with a value in it, from us or from the editor we start. Where the
    platform cannot say so (no prctl, a container's seccomp), carry on: best effort."""
    # The soft limit only: it is inherited by the editor and compose, and unlike a hard limit
    # of 0 it does not cripple for good a process that embeds us (a test runner) when it
    # later starts something that wants `ulimit -c`. Our own dumps are off by the flag below.
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)  # not inherited across exec; we are covered


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
