"""The console script, and the one place where an exception becomes an exit code.

`devsecrets get NAME` skips click and everything `get` does not need: it is the command scripts
call in loops, and start-up is most of its time (bench/bench_get.py). Anything else, or any
other shape of `get`, goes to the full CLI. Both paths end in `guarded`, so they agree on
every exit code and every error line.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    request = _simple_get(args)
    if request is None:
        from devsecrets.cli import main as cli_main

        return cli_main(argv)
    store_option, name = request
    store = store_option or os.environ.get("DEVSECRETS_STORE") or None
    return guarded(lambda: _get(store, name), debug=os.environ.get("DEVSECRETS_DEBUG") == "1")


def guarded(body: Callable[[], int], *, debug: bool) -> int:
    """Run a command; map what escapes it to the exit-code table in `errors`:
    1 expected failure (one line + hint), 2 usage, 3 bug (traceback), 130 Ctrl-C."""
    from devsecrets import errors

    try:
        return body()
    except errors.DevsecretsError as e:
        if debug:
            import traceback

            traceback.print_exc()
        _stderr(errors.error_lines(e))
        return e.exit_code
    except KeyboardInterrupt:
        _stderr("devsecrets: interrupted\n")
        return errors.EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader went away (`devsecrets get x | head -c1`)
        return errors.EXIT_FAILURE
    except Exception:  # noqa: BLE001 - last resort: a bug, shown as one
        import traceback

        traceback.print_exc()
        _stderr("devsecrets: internal error, please report it with the traceback above\n")
        return errors.EXIT_BUG


def _stderr(text: str) -> None:
    sys.stderr.write(text)
    sys.stderr.flush()


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

    from devsecrets.errors import error_lines
    from devsecrets.keys import find_identities
    from devsecrets.store import find_store

    store = find_store(Path.cwd(), Path(store_option) if store_option else None)
    pending = store.pending()  # an interrupted `recipients rm`, as the full CLI says
    if pending:
        _stderr(error_lines(pending).replace(": error: ", ": warning: ", 1))
    value = store.read(name, find_identities(os.environ)).value
    sys.stdout.buffer.write(value)
    sys.stdout.buffer.flush()
    return 0
