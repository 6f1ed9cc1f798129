"""The console script. `devsecrets get NAME` skips click and everything `get` does not need:
it is the command scripts call in loops, and start-up is most of its time (bench/bench_get.py).
Anything else, or any other shape of `get`, goes to the full CLI."""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    request = _simple_get(args)
    if request is None:
        from devsecrets.cli import main as cli_main

        return cli_main(argv)
    store_option, name = request
    return _get(store_option or os.environ.get("DEVSECRETS_STORE") or None, name)


def _simple_get(args: list[str]) -> tuple[str | None, str] | None:
    """`get NAME` or `--store DIR get NAME`; None for anything else."""
    store = None
    if args[:1] == ["--store"] and len(args) == 4:
        store, args = args[1], args[2:]
    elif args[:1] and args[0].startswith("--store=") and len(args) == 3:
        store, args = args[0].partition("=")[2], args[1:]
    if len(args) == 2 and args[0] == "get" and not args[1].startswith("-"):
        return store, args[1]
    return None


def _get(store_option: str | None, name: str) -> int:
    from pathlib import Path

    from devsecrets.errors import DevsecretsError, error_lines, exit_code_for

    try:
        from devsecrets.keys import find_identities
        from devsecrets.store import find_store

        store = find_store(Path.cwd(), Path(store_option) if store_option else None)
        pending = store.pending()  # an interrupted `recipients rm`, as the full CLI says
        if pending:
            sys.stderr.write(error_lines(pending).replace(": error: ", ": warning: ", 1))
        value = store.read(name, find_identities(os.environ)).value
    except DevsecretsError as e:
        if os.environ.get("DEVSECRETS_DEBUG") == "1":
            import traceback

            traceback.print_exc()
        sys.stderr.write(error_lines(e))
        return exit_code_for(e)
    except KeyboardInterrupt:
        sys.stderr.write("devsecrets: interrupted\n")
        return 130
    try:
        sys.stdout.buffer.write(value)
        sys.stdout.buffer.flush()
    except BrokenPipeError:
        return 1
    return 0
