"""The commands the console script runs without click: `get [--json] NAME...`, `set NAME`,
`up -d`.

Scripts call it in loops and start-up is most of its time (bench/bench_get.py), so it skips
click and the CLI module: it first tries the lean reader (`fastget`), then the full store
reader. Any other shape (an option, `--help`) goes to the full CLI, which does exactly the
same for these shapes (tests/test_entry.py compares them). `set NAME` with the value on
stdin tries the lean writer (`fastset`) and hands the value to the store's own write path
(`Store.write_many`, as the full CLI's `set`) whenever the lean one declines.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # not `typing.TYPE_CHECKING`: importing typing costs start-up time
if TYPE_CHECKING:
    from collections.abc import Callable

    from devsecrets.fastset import Plan
    from devsecrets.keys import Identities
    from devsecrets.store import Store


def lean_command(args: list[str]) -> Callable[[], int] | None:
    """The command to run for `args` (the caller maps its errors: `entry.guarded`), or None
    for the full CLI."""
    store, original = None, args
    if args[:1] == ["--store"] and len(args) >= 2:
        store, args = args[1], args[2:]
    elif args[:1] and args[0].startswith("--store="):
        store, args = args[0].partition("=")[2], args[1:]
    if store == "":  # click reads an empty --store as "." (and says there is no store there)
        return None
    store = store or os.environ.get("DEVSECRETS_STORE") or None
    if args[:1] == ["get"]:
        request = _get_args(args[1:])
        if request is not None:
            names, as_json = request
            return lambda: _get(store, names, as_json)
    if len(args) == 2 and args[0] == "set" and not args[1].startswith("-"):
        return _set_command(store, args[1])
    if _plain_up(original):
        found = _up_args(original[1:])
        if found is not None:
            return lambda: _up(found)
    return None


def _set_command(store_option: str | None, name: str) -> Callable[[], int] | None:
    """`set NAME` with the value on stdin (not a terminal: that prompts, in the full CLI)."""
    if sys.stdin is None or os.isatty(0):
        return None
    from devsecrets.coredump import no_core_dumps

    no_core_dumps()  # as the full CLI's set, before any key or value is read
    from devsecrets.fastset import prepare

    try:
        plan = prepare(store_option, name)
    except OSError:  # the cwd is gone, say: the full CLI reports it
        return None
    if plan is None:
        return None
    return lambda: _set(plan, store_option)


def _set(plan: Plan, store_option: str | None) -> int:
    from devsecrets.fastset import write

    value = sys.stdin.buffer.read()
    changed = write(plan, value)
    if changed is None:  # the full store decides, with the value already read
        from devsecrets.app import current

        app = current(store_option)
        store = app.store()
        changed = store.write_many({plan.name: value}, app.identities())[plan.name]
    state = "stored" if changed else "unchanged"
    sys.stderr.write(f"devsecrets: {plan.name}: {state} ({len(value)} bytes)\n")
    sys.stderr.flush()
    return 0


def _get_args(args: list[str]) -> tuple[list[str], bool] | None:
    as_json = args[:1] == ["--json"]
    names = args[1:] if as_json else args
    if not names or any(n.startswith("-") for n in names) or (len(names) > 1 and not as_json):
        return None
    return list(dict.fromkeys(names)), as_json


def _get(store_option: str | None, names: list[str], as_json: bool) -> int:
    from devsecrets.coredump import no_core_dumps
    from devsecrets.fastget import json_mapping, read_values

    no_core_dumps()  # as the full CLI's get: no core file with a value in it

    values = read_values(store_option, names)
    if values is None:
        store, identities = _store(store_option), _identities()
        values = {name: store.read(name, identities).value for name in names}
    sys.stdout.buffer.write(json_mapping(values) if as_json else values[names[0]])
    sys.stdout.buffer.flush()
    return 0


def _store(store_option: str | None) -> Store:
    """As `cli.App.store`: the store, and a warning about an interrupted `recipients rm`."""
    from pathlib import Path

    from devsecrets.store import find_store

    store = find_store(Path.cwd(), Path(store_option) if store_option else None)
    pending = store.pending()
    if pending:
        from devsecrets.errors import error_lines

        sys.stderr.write(error_lines(pending).replace(": error: ", ": warning: ", 1))
    return store


def _identities() -> Identities:
    from devsecrets.keys import find_identities

    return find_identities(os.environ)


# compose's global options as `up` and `render` take them (cli.compose_options), each with
# the `compose.ComposeOptions` field it fills; also read by configcache's head start.
COMPOSE_FLAGS = {
    "-f": "files", "--file": "files", "-c": "files", "--compose-file": "files",
    "-p": "project_name", "--project-name": "project_name", "--profile": "profiles",
    "--env-file": "env_files", "--project-directory": "project_directory",
}  # fmt: skip

# `up -d` (bench/bench_up.py: start-up is what devsecrets adds to compose's own `up`): the
# options it takes here, as click parses them for `up` (name: (keyword, takes a value)).
_UP_OPTIONS = {
    **{name: (field, True) for name, field in COMPOSE_FLAGS.items()},
    "--allow-disk": ("allow_disk", False), "--engine-mode": ("engine_mode", True),
    "--helper-image": ("helper_image", True), "--no-watch": ("no_watch", False),
    "--no-mask": ("no_mask", False),
}  # fmt: skip
_REPEATED = ("files", "profiles", "env_files")


def _up_args(args: list[str]) -> _UpArgs | None:
    """click's reading of `up ARGS` when ARGS are `-d` (or `--detach`) and the options above,
    each once (-f, --profile, --env-file: any number) and spelled `-x V`, `--xx V` or
    `--xx=V`; else None (the full CLI takes every other shape)."""
    found = _UpArgs()
    detach = []
    i = 0
    while i < len(args):
        arg = args[i]
        name, eq, value = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if arg in ("-d", "--detach"):
            detach.append(arg)
        elif name not in _UP_OPTIONS:
            return None
        elif not _UP_OPTIONS[name][1]:
            if eq or _UP_OPTIONS[name][0] in found.flags:
                return None
            found.flags.add(_UP_OPTIONS[name][0])
        else:
            key = _UP_OPTIONS[name][0]
            if not eq:
                if i + 1 >= len(args):
                    return None
                i += 1
                value = args[i]
            if key in _REPEATED:
                found.lists.setdefault(key, []).append(value)
            elif key in found.values:
                return None
            else:
                found.values[key] = value
        i += 1
    if len(detach) != 1 or found.values.get("engine_mode", "auto") not in _MODES:
        return None
    found.detach = detach[0]
    return found


_MODES = ("auto", "host", "engine")


def _plain_up(args: list[str]) -> bool:
    """`up` with no global option before it, nothing click reads from the environment for
    the group (the store, a debug value it would refuse), no shell completion, no `--debug`
    anywhere (the full CLI's tracebacks): then click has nothing to say that the lean
    `up -d` would not."""
    env = os.environ
    return (
        args[:1] == ["up"]
        and "--debug" not in args
        and "DEVSECRETS_STORE" not in env
        and env.get("DEVSECRETS_DEBUG", "0") in ("0", "1")
        and "_DEVSECRETS_COMPLETE" not in env
    )


class _UpArgs:
    def __init__(self) -> None:
        self.lists: dict[str, list[str]] = {}
        self.values: dict[str, str] = {}
        self.flags: set[str] = set()
        self.detach = "-d"


def _up(found: _UpArgs) -> int:
    """`up -d` as the full CLI's `up` runs it (tests/test_entry.py compares the two)."""
    from devsecrets.app import current, say, speller, warn
    from devsecrets.compose import ComposeOptions
    from devsecrets.live import parse_cli_policies
    from devsecrets.pipeline import UpOptions, bring_up

    compose = ComposeOptions(
        files=tuple(found.lists.get("files", ())),
        project_name=found.values.get("project_name"),
        profiles=tuple(found.lists.get("profiles", ())),
        env_files=tuple(found.lists.get("env_files", ())),
        project_directory=found.values.get("project_directory"),
    )
    allow_disk = "allow_disk" in found.flags
    options = UpOptions(
        compose=compose,
        args=(found.detach,),
        policies=parse_cli_policies(()),
        watch="no_watch" not in found.flags,
        mask="no_mask" not in found.flags,
        allow_disk=allow_disk,
        engine_mode=found.values.get("engine_mode"),
        helper_image=found.values.get("helper_image"),
    )
    kwargs = {  # as click passes them to `up`, for the commands `up` suggests
        "files": compose.files,
        "project_name": compose.project_name,
        "profiles": compose.profiles,
        "env_files": compose.env_files,
        "project_directory": compose.project_directory,
        "allow_disk": allow_disk,
    }
    app = current(None)
    return bring_up(
        options,
        app.cwd,
        app.env,
        app.store,
        app.identities,
        say=say,
        warn=warn,
        spell=speller(app, kwargs),
    )
