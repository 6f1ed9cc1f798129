"""Filesystem events -> debounced batches of paths -> a callback.

Input: directories and the paths in them that matter. Output: calls `on_batch(paths)` after a
quiet period. `Debouncer` is pure (driven by explicit times, so tests use a fake clock);
`Watcher` wires it to a watchdog observer and a thread. A batch names what changed; the
callback reads the disk itself, so the last state on disk always wins and nothing is lost.

A watched directory that is removed and recreated (`git checkout` of a branch without it,
`git clean`) is noticed by a cheap periodic stat: the dead watch is dropped, the new directory
is watched, everything in it counts as changed, and `report` gets one line each time.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

# How long a change waits for company. Writers that change several files at once (`set` with
# several values) hold the store lock throughout, and the reader waits for it, so this only
# has to group bursts that come without the lock (git checkout, editors); 5 ms does.
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

    def add(self, paths: Iterable[Path], now: float) -> None:
        self._pending.update(paths)
        if self._first is None:
            self._first = now
        self._last = now

    def due(self, now: float) -> set[Path] | None:
        if self._first is None or self._last is None:
            return None
        if now - self._last < self.quiet and now - self._first < self.max_wait:
            return None
        batch, self._pending = self._pending, set()
        self._first = self._last = None
        return batch

    def next_deadline(self) -> float | None:
        if self._first is None or self._last is None:
            return None
        return min(self._last + self.quiet, self._first + self.max_wait)


class Watcher:
    """Watch `directories` (not recursively) for changes to `wanted(path)` paths."""

    def __init__(
        self,
        directories: Iterable[Path],
        wanted: Callable[[Path], bool],
        on_batch: Callable[[set[Path]], None],
        debouncer: Debouncer | None = None,
        clock: Callable[[], float] = time.monotonic,
        report: Report | None = None,
        recheck: float = RECHECK,
    ) -> None:
        self.directories = sorted({d.resolve() for d in directories})
        self.wanted = wanted
        self.on_batch = on_batch
        self.debouncer = debouncer or Debouncer()
        self.clock = clock
        self.report: Report = report or (lambda line: None)
        self.recheck = recheck
        self._cond = threading.Condition()
        self._stopped = False
        self._observer: Any = None
        self._handler: Any = None
        self._watches: dict[Path, Any] = {}
        self._identity: dict[Path, tuple[int, int] | None] = {}
        self._thread = threading.Thread(target=self._loop, name="devsecrets-watch", daemon=True)

    def notify(self, paths: Iterable[Path]) -> None:
        interesting = [p for p in paths if self.wanted(p)]
        if not interesting:
            return
        with self._cond:
            self.debouncer.add(interesting, self.clock())
            self._cond.notify()

    def start(self) -> Watcher:
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        watcher = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: Any) -> None:
                if event.event_type in ("opened", "closed_no_write"):
                    return
                paths = [Path(str(event.src_path))]
                if getattr(event, "dest_path", ""):
                    paths.append(Path(str(event.dest_path)))
                watcher.notify(paths)

        self._handler = Handler()
        self._observer = Observer()
        for directory in self.directories:
            self._identity[directory] = _identity(directory)
            if self._identity[directory] is not None:
                self._schedule(directory)
        self._observer.start()
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def _schedule(self, directory: Path) -> None:
        try:
            self._watches[directory] = self._observer.schedule(
                self._handler, str(directory), recursive=False
            )
        except OSError:  # gone again already: the next check sees it
            self._identity[directory] = None

    def _unschedule(self, directory: Path) -> None:
        watch = self._watches.pop(directory, None)
        if watch is not None:
            try:
                self._observer.unschedule(watch)
            except (KeyError, OSError):  # the emitter already stopped with its directory
                pass

    def check_directories(self) -> None:
        """Follow directories that were removed, recreated or replaced since the last check."""
        for directory in self.directories:
            before, now = self._identity.get(directory), _identity(directory)
            if now == before:
                continue
            self._identity[directory] = now
            self._unschedule(directory)
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
        next_check = self.clock() + self.recheck
        while True:
            batch: set[Path] | None = None
            with self._cond:
                while not self._stopped:
                    now = self.clock()
                    if now >= next_check:
                        break
                    batch = self.debouncer.due(now)
                    if batch:
                        break
                    deadline = min(self.debouncer.next_deadline() or next_check, next_check)
                    self._cond.wait(max(deadline - now, 0.001))
                if self._stopped:
                    return
            if not batch:
                self.check_directories()
                next_check = self.clock() + self.recheck
                continue
            self.on_batch(batch)  # outside the lock: events keep queueing meanwhile


def _identity(directory: Path) -> tuple[int, int] | None:
    """(device, inode) of a directory, or None when there is none at that path."""
    try:
        info = os.stat(directory)
    except OSError:
        return None
    return (info.st_dev, info.st_ino) if stat.S_ISDIR(info.st_mode) else None
