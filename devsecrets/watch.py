"""Filesystem events -> debounced batches of paths -> a callback.

Input: directories and the paths in them that matter. Output: calls `on_batch(paths)` after a
quiet period, or at once when the store's writer lets go of its lock (what it wrote under the
lock is whole: no need to wait for company). `Debouncer` is pure (driven by explicit times,
so tests use a fake clock); `Watcher` wires it to the kernel's events and one thread: on
Linux it reads inotify itself in that thread (one wake-up from a rename to the batch), and
elsewhere it uses a watchdog observer. A batch names what changed; the callback reads the
disk itself, so the last state on disk always wins and nothing is lost.

A watched directory that is removed and recreated (`git checkout` of a branch without it,
`git clean`) is noticed by a cheap periodic stat: the dead watch is dropped, the new directory
is watched, everything in it counts as changed, and `report` gets one line each time.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import select
import stat
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import ctypes

    from watchdog.events import FileSystemEvent
    from watchdog.observers.api import BaseObserver, ObservedWatch

# How long a change waits for company. Writers that change several files at once (`set` with
# several values) hold the store lock throughout, and the reader waits for it; their changes
# are due when the lock is released (see `Debouncer.released`). So this only has to group
# bursts that come without the lock (git checkout, editors); 5 ms does.
QUIET = 0.005
RECHECK = 0.25  # how often directories are checked for being removed or replaced
Report = Callable[[str], None]


class Debouncer:
    """Collects paths; a batch is due once `quiet` seconds pass without a new one, or once the
    oldest waited `max_wait` (so a steady stream of writes cannot starve it)."""

    def __init__(self, quiet: float = QUIET, max_wait: float = 0.25) -> None:
        self.quiet = quiet
        self.max_wait = max_wait
        self._pending: set[Path] = set()
        self._first: float | None = None
        self._last: float | None = None
        self._released = False

    def add(self, paths: Iterable[Path], now: float) -> None:
        self._pending.update(paths)
        if self._first is None:
            self._first = now
        self._last = now

    def released(self) -> None:
        """The store's writer let go of its lock: what is pending was written whole under it
        (or before it), so it is due now. Nothing pending: nothing changes (a lock-free
        change that comes later still waits for its quiet period)."""
        if self._first is not None:
            self._released = True

    def due(self, now: float) -> set[Path] | None:
        if self._first is None or self._last is None:
            return None
        waited = now - self._last >= self.quiet or now - self._first >= self.max_wait
        if not (waited or self._released):
            return None
        batch, self._pending = self._pending, set()
        self._first = self._last = None
        self._released = False
        return batch

    def next_deadline(self) -> float | None:
        if self._first is None or self._last is None:
            return None
        if self._released:
            return self._first  # already due
        return min(self._last + self.quiet, self._first + self.max_wait)


class Watcher:
    """Watch `directories` (not recursively) for changes to `wanted(path)` paths.

    `writer_lock`: the store's lock file. Its writers hold it while they write and close it
    when done (the kernel reports that close before it releases the lock): the changes seen
    until then are due at once, without the quiet period."""

    def __init__(
        self,
        directories: Iterable[Path],
        wanted: Callable[[Path], bool],
        on_batch: Callable[[set[Path]], None],
        debouncer: Debouncer | None = None,
        clock: Callable[[], float] = time.monotonic,
        report: Report | None = None,
        recheck: float = RECHECK,
        writer_lock: Path | None = None,
    ) -> None:
        self.directories = sorted({d.resolve() for d in directories})
        self.wanted = wanted
        self.on_batch = on_batch
        self.debouncer = debouncer or Debouncer()
        self.clock = clock
        self.report: Report = report or (lambda line: None)
        self.recheck = recheck
        self.writer_lock = (
            None if writer_lock is None else writer_lock.parent.resolve() / (writer_lock.name)
        )
        self._lock = threading.Lock()
        self._stopped = False
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._events: _Inotify | _Watchdog | None = None
        self._identity: dict[Path, tuple[int, int] | None] = {}
        self._next_check = 0.0
        self._thread = threading.Thread(target=self._loop, name="devsecrets-watch", daemon=True)

    def notify(self, paths: Iterable[Path]) -> None:
        """Paths changed (any thread)."""
        interesting = [p for p in paths if self.wanted(p)]
        if interesting:
            with self._lock:
                self.debouncer.add(interesting, self.clock())
            self._wake()

    def writer_done(self) -> None:
        """The store's writer closed its lock (any thread): its changes are due."""
        with self._lock:
            self.debouncer.released()
        self._wake()

    def _changed(self, path: Path, closed_for_writing: bool) -> None:
        """One event (the watch thread, or watchdog's): a bug here costs that event a line,
        never the watch."""
        try:
            if closed_for_writing and path == self.writer_lock:
                self.writer_done()
            else:
                self.notify([path])
        except Exception as e:  # noqa: BLE001
            self.report(f"internal error in the watch ({e.__class__.__name__}); still watching")

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):  # already awake
            os.write(self._wake_w, b"x")

    def start(self) -> Watcher:
        self._events = _Inotify.open(self._changed) or _Watchdog(self._changed)
        for directory in self.directories:
            self._identity[directory] = _identity(directory)
            if self._identity[directory] is not None:
                self._schedule(directory)
        self._events.start()
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
        self._wake()
        if self._events is not None:
            self._events.stop()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        if not self._thread.is_alive():
            for fd in (self._wake_r, self._wake_w):
                with contextlib.suppress(OSError):
                    os.close(fd)
            if self._events is not None:
                self._events.close()

    def _schedule(self, directory: Path) -> None:
        assert self._events is not None
        if not self._events.schedule(directory):  # gone again already: the next check sees it
            self._identity[directory] = None

    def check_directories(self) -> None:
        """Follow directories that were removed, recreated or replaced since the last check."""
        assert self._events is not None
        for directory in self.directories:
            before, now = self._identity.get(directory), _identity(directory)
            if now == before:
                continue
            self._identity[directory] = now
            self._events.unschedule(directory)
            if now is None:
                self.report(f"{directory} is gone; keeping what runs, waiting for it to return")
                continue
            self._schedule(directory)
            how = "is back" if before is None else "was replaced"
            self.report(f"{directory} {how}; following it again")
            try:
                self.notify(directory.iterdir())  # whatever is there now counts as changed
            except OSError:
                pass

    def _loop(self) -> None:
        assert self._events is not None
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        inotify_fd = self._events.fd()
        if inotify_fd is not None:
            poller.register(inotify_fd, select.POLLIN)
        self._next_check = self.clock() + self.recheck
        while True:
            with self._lock:
                if self._stopped:
                    return
            try:
                self._step(poller)
            except Exception as e:  # noqa: BLE001 - a bug here must not silence the watch
                self.report(f"internal error in the watch ({e.__class__.__name__}); still watching")
                time.sleep(0.1)

    def _step(self, poller: select.poll) -> None:
        """One turn: a batch that is due, the directory check, or waiting for events."""
        assert self._events is not None
        with self._lock:
            now = self.clock()
            batch = self.debouncer.due(now)
            due = self.debouncer.next_deadline()
        if batch:
            self.on_batch(batch)  # events queue up meanwhile (in the kernel or the pipe)
            return
        if now >= self._next_check:
            self.check_directories()
            self._next_check = self.clock() + self.recheck
            return
        deadline = self._next_check if due is None else min(due, self._next_check)
        for fd, _ in poller.poll(max(math.ceil((deadline - now) * 1000), 1)):
            if fd == self._wake_r:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 4096)
            else:
                self._events.read()


# inotify(7), read in the watch thread itself (no watchdog threads between a rename and us)
_IN_MODIFY, _IN_ATTRIB, _IN_CLOSE_WRITE = 0x2, 0x4, 0x8
_IN_MOVED_FROM, _IN_MOVED_TO, _IN_CREATE, _IN_DELETE = 0x40, 0x80, 0x100, 0x200
_IN_Q_OVERFLOW, _IN_IGNORED = 0x4000, 0x8000
_IN_ONLYDIR, _IN_DONT_FOLLOW = 0x01000000, 0x02000000
_MASK = (
    _IN_MODIFY | _IN_ATTRIB | _IN_CLOSE_WRITE | _IN_MOVED_FROM | _IN_MOVED_TO | _IN_CREATE
    | _IN_DELETE | _IN_ONLYDIR | _IN_DONT_FOLLOW
)  # fmt: skip
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of name


class _Inotify:
    """Linux: one inotify descriptor, read by the watch thread when poll says so."""

    def __init__(self, libc: ctypes.CDLL, fd: int, changed: Callable[[Path, bool], None]) -> None:
        self._libc, self._fd, self._changed = libc, fd, changed
        self._dirs: dict[int, Path] = {}

    @classmethod
    def open(cls, changed: Callable[[Path, bool], None]) -> _Inotify | None:
        if not sys.platform.startswith("linux"):
            return None
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        except (OSError, AttributeError):
            return None
        return cls(libc, fd, changed) if fd >= 0 else None

    def fd(self) -> int | None:
        return self._fd

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)

    def schedule(self, directory: Path) -> bool:
        wd = self._libc.inotify_add_watch(self._fd, os.fsencode(directory), _MASK)
        if wd < 0:
            return False
        self._dirs[wd] = directory
        return True

    def unschedule(self, directory: Path) -> None:
        for wd in [wd for wd, d in self._dirs.items() if d == directory]:
            del self._dirs[wd]
            self._libc.inotify_rm_watch(self._fd, wd)  # fails if the kernel dropped it: fine

    def read(self) -> None:
        try:
            data = os.read(self._fd, 65536)
        except BlockingIOError:
            return
        offset = 0
        while offset + _EVENT.size <= len(data):
            wd, mask, _, length = _EVENT.unpack_from(data, offset)
            name = data[offset + _EVENT.size : offset + _EVENT.size + length].rstrip(b"\0")
            offset += _EVENT.size + length
            if mask & _IN_Q_OVERFLOW:  # events were lost: everything counts as changed
                for watched in set(self._dirs.values()):
                    with contextlib.suppress(OSError):
                        for path in watched.iterdir():
                            self._changed(path, False)
                continue
            where = self._dirs.get(wd)
            if mask & _IN_IGNORED:  # the directory went away (check_directories follows it)
                self._dirs.pop(wd, None)
            elif where is not None and name:
                self._changed(where / os.fsdecode(name), bool(mask & _IN_CLOSE_WRITE))


class _Watchdog:
    """Elsewhere: a watchdog observer (its own threads) feeding the watch thread."""

    def __init__(self, changed: Callable[[Path, bool], None]) -> None:
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                if event.event_type in ("opened", "closed_no_write"):
                    return
                changed(Path(str(event.src_path)), event.event_type == "closed")
                if getattr(event, "dest_path", ""):
                    changed(Path(str(event.dest_path)), False)

        self._handler = Handler()
        self._observer: BaseObserver = Observer()
        self._watches: dict[Path, ObservedWatch] = {}

    def fd(self) -> int | None:
        return None

    def start(self) -> None:
        self._observer.start()

    def stop(self) -> None:
        self._observer.stop()
        self._observer.join(timeout=5)

    def close(self) -> None:
        pass

    def read(self) -> None:
        pass

    def schedule(self, directory: Path) -> bool:
        try:
            self._watches[directory] = self._observer.schedule(
                self._handler, str(directory), recursive=False
            )
        except OSError:
            return False
        return True

    def unschedule(self, directory: Path) -> None:
        watch = self._watches.pop(directory, None)
        if watch is not None:
            try:
                self._observer.unschedule(watch)
            except (KeyError, OSError):  # the emitter already stopped with its directory
                pass


def _identity(directory: Path) -> tuple[int, int] | None:
    """(device, inode) of a directory, or None when there is none at that path."""
    try:
        info = os.stat(directory)
    except OSError:
        return None
    return (info.st_dev, info.st_ino) if stat.S_ISDIR(info.st_mode) else None
