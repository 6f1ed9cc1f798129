"""The commands the console script runs without click: `get [--json] NAME...`, `set NAME`.

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
    store = None
    if args[:1] == ["--store"] and len(args) >= 2:
        store, args = args[1], args[2:]
    elif args[:1] and args[0].startswith("--store="):
        store, args = args[0].partition("=")[2], args[1:]
    store = store or os.environ.get("DEVSECRETS_STORE") or None
    if args[:1] == ["get"]:
        request = _get_args(args[1:])
        if request is not None:
            names, as_json = request
            return lambda: _get(store, names, as_json)
    if len(args) == 2 and args[0] == "set" and not args[1].startswith("-"):
        return _set_command(store, args[1])
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
        from pathlib import Path

        from devsecrets.cli import App

        option = Path(store_option) if store_option else None
        app = App(env=dict(os.environ), cwd=Path.cwd(), store_option=option)
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
