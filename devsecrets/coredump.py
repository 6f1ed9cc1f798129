"""No core dump with a secret value in it: the first thing every command holding values does.

Core dumps off for this process and its children: the soft `RLIMIT_CORE` 0 (inherited by the
editor and compose), and `PR_SET_DUMPABLE` 0 for this process (so not even a core_pattern pipe
gets one; not inherited across exec). A module of its own, importing only `resource` and
`ctypes`, because `get` and `set` call it on their lean start path (bench/bench_get.py):
`process`, which re-exports it, costs several times more to import. Never prints.
"""

from __future__ import annotations

_PR_SET_DUMPABLE = 4  # <linux/prctl.h>


def no_core_dumps() -> None:
    """No core file with a value in it, from us or from the editor we start. Where the
    platform cannot say so (no prctl, a container's seccomp), carry on: best effort."""
    import resource

    # The soft limit only: it is inherited by the editor and compose, and unlike a hard limit
    # of 0 it does not cripple for good a process that embeds us (a test runner) when it
    # later starts something that wants `ulimit -c`. Our own dumps are off by the flag below.
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))
    except (ValueError, OSError):
        pass
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)  # not inherited across exec; we are covered
    except (OSError, AttributeError, ImportError):
        pass
