"""Mask secret values in compose's output: every current value becomes `****`.

Input: a function giving the current values (they change while `up` follows the store), and
compose's stdout/stderr pipes. Output: the same lines with values replaced, on our own
stdout/stderr. Values shorter than MIN_VALUE bytes are not masked: they would blot out
ordinary words. Line by line, so a value split across two writes of one line is still found.
Compose colours its output only on a terminal and sees our pipe instead, so when our stdout
is a terminal it is asked for colours (`COMPOSE_ANSI=always`) unless the user chose
(`COMPOSE_ANSI`, `NO_COLOR`); masking works on the coloured lines alike.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

from devsecrets.errors import ComposeError
from devsecrets.process import Stopper, wait_forwarding

MIN_VALUE = 4
MASK = b"****"


class Masker:
    def __init__(self, values: Callable[[], Mapping[str, bytes]]) -> None:
        self._values = values
        self._seen: tuple[bytes, ...] | None = None
        self._needles: list[bytes] = []
        self._lock = threading.Lock()

    def _current(self) -> list[bytes]:
        values = tuple(sorted(self._values().values()))
        with self._lock:
            if values != self._seen:
                self._seen = values
                self._needles = sorted(_needles(values), key=len, reverse=True)
            return self._needles

    def mask(self, line: bytes) -> bytes:
        for needle in self._current():
            if needle in line:
                line = line.replace(needle, MASK)
        return line

    def pump(self, source: IO[bytes], target: IO[bytes]) -> None:
        """Copy `source` to `target` line by line, masked, until EOF."""
        for line in iter(source.readline, b""):
            target.write(self.mask(line))
            target.flush()
        source.close()

    def attach(self, child: subprocess.Popen[bytes]) -> list[threading.Thread]:
        """Start copying the child's piped stdout and stderr to ours."""
        threads = []
        for source, target in (
            (child.stdout, sys.stdout.buffer),
            (child.stderr, sys.stderr.buffer),
        ):
            if source is None:
                continue
            thread = threading.Thread(target=self.pump, args=(source, target), daemon=True)
            thread.start()
            threads.append(thread)
        return threads


def _needles(values: Sequence[bytes]) -> set[bytes]:
    """Each value, without the trailing newline most files have, and each long line of a
    multi-line value (a PEM key is printed line by line)."""
    needles = set()
    for value in values:
        stripped = value.strip(b"\r\n")
        if len(stripped) >= MIN_VALUE:
            needles.add(stripped)
        lines = stripped.splitlines()
        if len(lines) > 1:
            needles.update(ln.strip() for ln in lines if len(ln.strip()) >= 8)
    return needles


def colour_env(env: Mapping[str, str], terminal: bool) -> dict[str, str]:
    """`env` for compose, asking for colours when our own output is a `terminal`."""
    wanted = dict(env)
    if terminal and "COMPOSE_ANSI" not in env and not env.get("NO_COLOR"):
        wanted["COMPOSE_ANSI"] = "always"
    return wanted


def popen(argv: Sequence[str], env: Mapping[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    """Start compose with its output piped to us (for masking), coloured as it would be."""
    child_env = colour_env(env, sys.stdout.isatty())
    try:
        return subprocess.Popen(
            list(argv), env=child_env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
    except OSError as e:
        raise ComposeError(f"could not run {argv[0]}: {e.strerror}") from e


def run_foreground(
    argv: Sequence[str],
    env: Mapping[str, str],
    cwd: Path,
    masker: Masker,
    while_running: Callable[[], Stopper | None] | None = None,
) -> int:
    """`process.run_foreground` with compose's output masked."""
    child = popen(argv, env, cwd)
    threads = masker.attach(child)
    try:
        return wait_forwarding(child, while_running)
    finally:
        for thread in threads:
            thread.join(timeout=10)


def run(argv: Sequence[str], env: Mapping[str, str], cwd: Path, masker: Masker) -> int:
    """`compose.run` with masked output: compose's own exit code."""
    child = popen(argv, env, cwd)
    threads = masker.attach(child)
    try:
        return child.wait()
    finally:
        if child.poll() is None:
            child.terminate()
            child.wait()
        for thread in threads:
            thread.join(timeout=10)
