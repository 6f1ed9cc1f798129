"""`devsecrets run -- CMD`: a command on the host with secrets as files, the `*_FILE` way.

Input: secret values by name, a command, the environment. Output: the command's exit code.
The values go into a fresh 0700 directory on tmpfs, one 0400 file per secret, and the
command gets `<NAME>_FILE` variables with their paths (the convention of the official
postgres and mysql images); the values themselves are never put in its environment or argv.
The directory is removed when the command ends, also on SIGTERM/SIGHUP/SIGINT; one left by
a killed run (its lock gone with it) is removed by the next run. Never prints.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from devsecrets import fdpath, runtime_dir
from devsecrets.errors import DevsecretsError, MaterializeError, UsageProblem
from devsecrets.process import run_forwarding

if TYPE_CHECKING:
    from devsecrets.compose import ComposeOptions
    from devsecrets.keys import Identities
    from devsecrets.store import Store

PREFIX = "run-"
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # not .lock, the marker, `..`


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
    """A private directory under `root` holding one 0400 file per value; removed on exit.

    The directory is one of `runtime_dir`'s scratch dirs: made and marked ours, locked for
    as long as the command runs, every file created relative to its descriptor, overwritten
    and removed through descriptors. Making it first removes the `run-*` directories that
    no live run holds (left by a SIGKILLed run): marked ones only, through descriptors,
    never following a symlink."""
    for name in values:
        if not _FILE_NAME.fullmatch(name):
            raise MaterializeError(f"secret {name!r} cannot be a file name in the run directory")
    with runtime_dir.scratch_dir(root, PREFIX) as (directory, dir_fd):
        paths = {}
        for name, value in values.items():
            try:
                _write(dir_fd, name, value, 0o400)
            except OSError as e:
                raise MaterializeError(f"cannot write {directory / name}: {e.strerror}") from e
            paths[name] = directory / name
        yield paths


def _write(dir_fd: int, name: str, value: bytes, mode: int) -> None:
    fd = os.open(name, fdpath.NEW_FILE, mode, dir_fd=dir_fd)
    with os.fdopen(fd, "wb") as out:
        out.write(value)


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

        def start() -> subprocess.Popen[bytes]:
            try:
                return subprocess.Popen(list(command), env=child_env, cwd=cwd)  # noqa: S603
            except OSError as e:
                raise RunError(f"could not run {command[0]!r}: {e.strerror}") from e

        # forwarding signals (`process.run_forwarding`), so our cleanup runs after it stopped;
        # 128+N when a signal N killed it, as a shell reports it
        code = run_forwarding(start)
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


def run_with_secrets(
    command: Sequence[str],
    names: Sequence[str],
    options: ComposeOptions,
    cwd: Path,
    env: Mapping[str, str],
    store_factory: Callable[[], Store],
    identities_factory: Callable[[], Identities],
    *,
    allow_disk: bool,
    say: Callable[[str], None],
    warn: Callable[[str], None],
) -> int:
    """`devsecrets run`: the named secrets (none named: those the stack grants) as files on
    tmpfs for `command`; its exit code. Says which files it made, by name."""
    from devsecrets.runtime_dir import private_root
    from devsecrets.store import validate_name

    root = private_root(env, allow_disk=allow_disk, warn=warn)
    store = store_factory()
    wanted = {validate_name(n): n for n in names}
    if not wanted:
        wanted = stack_secrets(options, cwd, env, store)
    variables_for(list(wanted))  # two names for one variable: refused before any value is read
    values = {key: store.read_value(name, identities_factory()) for key, name in wanted.items()}
    say(f"{len(values)} secret file(s): {', '.join(sorted(values)) or 'none'}")
    return run(command, values, env, cwd, root)
