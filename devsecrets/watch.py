"""Filesystem events -> debounced batches of paths -> a callback.

Input: directories and the paths in them that matter. Output: calls `on_batch(paths)` after a
quiet period. `Debouncer` is pure (driven by explicit times, so tests use a fake clock);
`Watcher` wires it to a watchdog observer and a thread. A batch names what changed; the
callback reads the disk itself, so the last state on disk always wins and nothing is lost.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any


class Debouncer:
    """Collects paths; a batch is due once `quiet` seconds pass without a new one, or once the
    oldest waited `max_wait` (so a steady stream of writes cannot starve it)."""

    def __init__(self, quiet: float = 0.02, max_wait: float = 0.25) -> None:
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
    ) -> None:
        self.directories = sorted({d.resolve() for d in directories if d.is_dir()})
        self.wanted = wanted
        self.on_batch = on_batch
        self.debouncer = debouncer or Debouncer()
        self.clock = clock
        self._cond = threading.Condition()
        self._stopped = False
        self._observer: Any = None
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

        self._observer = Observer()
        for directory in self.directories:
            self._observer.schedule(Handler(), str(directory), recursive=False)
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

    def _loop(self) -> None:
        while True:
            batch: set[Path] | None = None
            with self._cond:
                while not self._stopped:
                    now = self.clock()
                    batch = self.debouncer.due(now)
                    if batch:
                        break
                    deadline = self.debouncer.next_deadline()
                    self._cond.wait(None if deadline is None else max(deadline - now, 0.001))
                if self._stopped or not batch:
                    return
            self.on_batch(batch)  # outside the lock: events keep queueing meanwhile
