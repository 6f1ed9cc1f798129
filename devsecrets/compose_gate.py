"""`compose up`, started while engine mode's helper starts, held until the values are in.

compose spends its first ~100 ms or more before it needs the engine: the docker CLI, the
plugin, reading the stack. Engine mode's helper (a container start) takes about as long.
So `up -d` starts compose early with one more file last on its command line, the read end
of a pipe (`-f /dev/fd/N`): compose reads the stack and the pending override, then blocks
reading the pipe until `release` writes the real override to it and closes it.

The pending override (override.publish_pending) has the real one's keys, but binds every
service's secrets from under `UNRELEASED`, a directory of the helper's volume that nothing
ever makes; the real binds, sent through the pipe as one JSON document (override.gate_text),
replace those (compose merges volumes by target). So compose goes on with the real binds
only once `release` has sent them, after the values are in. If this process dies before
(SIGKILL), compose reads end-of-file and goes on with the pending binds, which fail every
service with secrets, on a first `up` as on a re-run over values already there; a document
cut short by our death is not JSON, and compose refuses it. Every other way out (an error,
a stop signal) calls `cancel`, which kills compose first.

compose runs in its own session, so `cancel` can kill the docker CLI and its compose plugin
together (the plugin survives its CLI otherwise); our stop signals are passed on to it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from devsecrets import engine_api, process
from devsecrets.errors import ComposeError, reason

UNRELEASED = ".unreleased"  # in the helper's volume: never made (see the module doc)


def supported() -> bool:
    """A pipe compose can open by path (`/dev/fd/N`): Linux and macOS."""
    return os.name == "posix" and os.path.isdir("/dev/fd")


# where the docker CLI looks for its plugins on Linux, after the user's `<config>/cli-plugins`
_SYSTEM_PLUGIN_DIRS = (
    "/usr/local/lib/docker/cli-plugins",
    "/usr/local/libexec/docker/cli-plugins",
    "/usr/lib/docker/cli-plugins",
    "/usr/libexec/docker/cli-plugins",
)


def standalone(argv: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """`docker compose …` as the compose plugin run by itself: the same binary, standalone,
    without the docker CLI starting first and asking the plugin for its metadata (~50 ms of
    compose's start, which is what `up -d` waits for at the gate: bench/bench_up.py). The
    argv unchanged where the plugin is not where the CLI would find it (Linux only; a config
    naming extra plugin directories is left to the CLI)."""
    if list(argv[:2]) != ["docker", "compose"] or not sys.platform.startswith("linux"):
        return list(argv)
    config = engine_api.config_dir(env)
    settings = None if config is None else engine_api.read_config(config)
    if config is None or settings is None or settings.get("cliPluginsExtraDirs"):
        return list(argv)
    for directory in (config / "cli-plugins", *map(Path, _SYSTEM_PLUGIN_DIRS)):
        plugin = directory / "docker-compose"
        if plugin.is_file() and os.access(plugin, os.X_OK):
            return [str(plugin), *argv[2:]]
    return list(argv)


class GatedUp:
    """A `compose up` that waits at the gate: `release` it (its exit code) or `cancel` it.
    Either may be called more than once; only the first of them acts."""

    def __init__(
        self, files: Sequence[str], command: Sequence[str], env: Mapping[str, str], cwd: Path
    ) -> None:
        """`files`: compose's argv up to its last `-f` (ours); `command`: `up` and its args."""
        reader, self._writer = os.pipe()  # neither is inherited by anything else we start
        try:
            self._proc = subprocess.Popen(
                standalone([*files, "-f", f"/dev/fd/{reader}", *command], env),
                env=dict(env),
                cwd=cwd,
                pass_fds=(reader,),
                start_new_session=True,
            )
        except OSError as e:
            os.close(self._writer)
            raise ComposeError(f"could not run {files[0]}: {reason(e)}") from e
        finally:
            os.close(reader)
        self._done = False

    def release(self, text: bytes) -> int:
        """Send compose the real binds (`text`) and wait for it: its exit code. Our stop
        signals reach it meanwhile (it has no terminal to get them from); after one,
        `Interrupted` is raised once it has ended, as for a compose in our process group."""
        if self._done:
            return self._proc.wait()
        self._done = True
        came: list[int] = []

        def forward(signum: int, first: bool) -> None:
            came.append(signum)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, signum)

        with process.on_stop(forward):
            try:
                _send(self._writer, text)
            finally:
                os.close(self._writer)
            code = self._proc.wait()
        if came:
            raise process.Interrupted(came[0])
        return code

    def cancel(self) -> None:
        """Stop compose before it reads the gate: it has created nothing yet."""
        if self._done:
            return
        self._done = True
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, signal.SIGKILL)  # the CLI and its plugin
        self._proc.wait()
        os.close(self._writer)  # only now: end-of-file would let it through


def _send(fd: int, text: bytes) -> None:
    """All of `text` (more than a pipe holds waits for compose to read), unless compose has
    ended already."""
    view = memoryview(text)
    with contextlib.suppress(BrokenPipeError):
        while view:
            view = view[os.write(fd, view) :]
