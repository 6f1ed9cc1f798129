"""`devsecrets run -- CMD`: a command on the host with secrets as files, the `*_FILE` way.

Input: secret values by name, a command, the environment. Output: the command's exit code.
The values go into a fresh 0700 directory on tmpfs, one 0400 file per secret, and the
command gets `<NAME>_FILE` variables with their paths (the convention of the official
postgres and mysql images); the values themselves are never put in its environment or argv.
The directory is removed when the command ends, also on SIGTERM/SIGHUP/SIGINT; one left by
a killed run is removed by the next run once its pid is gone. Never prints.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from devsecrets.errors import DevsecretsError, MaterializeError, UsageProblem
from devsecrets.process import is_alive, wait_forwarding

if TYPE_CHECKING:
    from devsecrets.compose import ComposeOptions
    from devsecrets.store import Store

PREFIX = "run-"
PID_FILE = ".pid"


class RunError(DevsecretsError):
    pass


def file_variable(name: str) -> str:
    """db_password -> DB_PASSWORD_FILE; tls.key -> TLS_KEY_FILE."""
    return re.sub(r"[^A-Za-z0-9]", "_", name).upper() + "_FILE"


def variables_for(names: Sequence[str]) -> dict[str, str]:
    """name -> variable; two names that map to one variable are refused."""
    by_variable: dict[str, str] = {}
    for name in names:
        variable = file_variable(name)
        if variable in by_variable and by_variable[variable] != name:
            raise UsageProblem(
                f"secrets {by_variable[variable]!r} and {name!r} would both be {variable}",
                hint="pass one of them with --secret",
            )
        by_variable[variable] = name
    return {name: variable for variable, name in by_variable.items()}


@contextlib.contextmanager
def secret_files(root: Path, values: Mapping[str, bytes]) -> Iterator[dict[str, Path]]:
    """A private directory under `root` holding one 0400 file per value; removed on exit."""
    clean_stale(root)
    directory = Path(tempfile.mkdtemp(prefix=PREFIX, dir=root))  # 0700, a name nobody had
    try:
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            info = os.fstat(dir_fd)
            if info.st_uid != os.getuid() or stat.S_IMODE(info.st_mode) != 0o700:
                raise MaterializeError(f"{directory} is not a private directory of yours")
            _write(dir_fd, PID_FILE, str(os.getpid()).encode(), 0o600)
            paths = {}
            for name, value in values.items():
                _write(dir_fd, name, value, 0o400)
                paths[name] = directory / name
        finally:
            os.close(dir_fd)
        yield paths
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _write(dir_fd: int, name: str, value: bytes, mode: int) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    fd = os.open(name, flags, mode, dir_fd=dir_fd)
    with os.fdopen(fd, "wb") as out:
        out.write(value)


def clean_stale(root: Path) -> list[str]:
    """Remove run directories of runs that were killed (their pid is gone)."""
    removed = []
    for directory in root.glob(PREFIX + "*"):
        info = directory.lstat()
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            continue
        try:
            pid = int((directory / PID_FILE).read_text())
        except (OSError, ValueError):
            continue  # being created right now, or not ours to judge
        if not is_alive(pid):
            shutil.rmtree(directory, ignore_errors=True)
            removed.append(directory.name)
    return removed


def run(
    command: Sequence[str],
    values: Mapping[str, bytes],
    env: Mapping[str, str],
    cwd: Path,
    root: Path,
) -> int:
    """Run `command` with `<NAME>_FILE` variables; its exit code (128+N if killed by N)."""
    variables = variables_for(list(values))
    with secret_files(root, values) as paths:
        child_env = {**env, **{variables[n]: str(p) for n, p in paths.items()}}
        try:
            child = subprocess.Popen(list(command), env=child_env, cwd=cwd)  # noqa: S603
        except OSError as e:
            raise RunError(f"could not run {command[0]!r}: {e.strerror}") from e
        return _wait(child)


def _wait(child: subprocess.Popen[bytes]) -> int:
    """Wait for the child, forwarding signals (`process.wait_forwarding`), so our cleanup
    runs after it has stopped; 128+N when a signal N killed it, as a shell reports it."""
    code = wait_forwarding(child)
    return 128 - code if code < 0 else code


def stack_secrets(
    options: ComposeOptions, cwd: Path, env: Mapping[str, str], store: Store
) -> dict[str, str]:
    """The secrets the stack grants that the store provides: compose key -> store name."""
    from devsecrets.needs import missing_error, needs
    from devsecrets.project import open_project

    _, model = open_project(options, cwd, env, need_engine=False)
    names = store.names()
    need = needs(model, names)
    if need.missing:
        raise missing_error(need.missing, names)
    return dict(need.provided)
