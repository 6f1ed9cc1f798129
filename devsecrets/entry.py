"""The console script, and the one place where an exception becomes an exit code.

`devsecrets get [--json] NAME...` skips click and everything `get` does not need
(`fastpath`): it is the command scripts call in loops, and start-up is most of its time
(bench/bench_get.py). Anything else, or any other shape of `get`, goes to the full CLI. Both
paths end in `guarded`, so they agree on every exit code and every error line. `up` and
`render` start compose first (`configcache.prestart`). A finished command flushes its output
and leaves with os._exit: interpreter teardown is time the user waits for.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # not `typing.TYPE_CHECKING`: importing typing costs start-up time
if TYPE_CHECKING:
    from collections.abc import Callable


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    name = _command(args) if argv is None else None  # only the console script's own process
    if name in HOLDS_PLAINTEXT:
        _stop_signals_not_ignored()
    if name in ("up", "render"):
        try:
            from devsecrets import configcache

            configcache.prestart(args)  # compose config runs while the rest is imported
        except KeyboardInterrupt:  # Ctrl-C this early: what started is stopped, one line
            if "devsecrets.configcache" in sys.modules:
                sys.modules["devsecrets.configcache"].discard()
            _stderr("devsecrets: interrupted\n")
            return 130
    from devsecrets.fastpath import lean_command

    command = lean_command(args)
    if command is None:
        from devsecrets.cli import main as cli_main

        code = cli_main(argv)
    else:
        code = guarded(command, debug=os.environ.get("DEVSECRETS_DEBUG") == "1")
    if "devsecrets.configcache" in sys.modules:
        sys.modules["devsecrets.configcache"].discard()
    if argv is None and (command is not None or name in FAST_EXIT):
        _fast_exit(code)  # the console script, a process of its own, after a command checked
    return code


# Commands checked to leave nothing behind for interpreter teardown: every file they write is
# closed (and fsynced) before they return; `_fast_exit` runs the atexit handlers itself and
# still declines when a thread is left.
FAST_EXIT = frozenset({"get", "set", "render", "up"})


# Commands that write or hold secret values (their plaintext guard wipes on a stop signal).
HOLDS_PLAINTEXT = frozenset({"up", "watch", "edit", "run", "render", "compose"})


def _stop_signals_not_ignored() -> None:
    """A stop signal the parent left ignored (`nohup`, a non-interactive shell's background
    job ignores SIGINT and SIGQUIT) is lost until the plaintext guard takes it over, and a
    command that loses it runs on (an `up` nobody can stop but with SIGKILL). Until then
    nothing is written, so the default (end the process) is right."""
    import signal

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        if signal.getsignal(signum) == signal.SIG_IGN:
            signal.signal(signum, signal.SIG_DFL)


def _command(args: list[str]) -> str | None:
    if args[:1] == ["--store"]:
        args = args[2:]
    elif args[:1] and args[0].startswith("--store="):
        args = args[1:]
    if args[:1] == ["--debug"]:
        args = args[1:]
    return args[0] if args else None


def _fast_exit(code: int) -> None:
    """Run the atexit callbacks (logging's flush, once concurrent.futures imported it), flush,
    then leave without module teardown; unless a thread is left (teardown would wait for it)."""
    if "threading" in sys.modules and _threads() > 1:
        return
    import atexit

    atexit._run_exitfuncs()  # what the interpreter runs first at exit, in the same order
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (BrokenPipeError, ValueError):
        code = code or 1
    os._exit(code)


def _threads() -> int:
    import threading

    return threading.active_count()


def guarded(body: Callable[[], int], *, debug: bool) -> int:
    """Run a command; map what escapes it to the exit-code table in `errors`:
    1 expected failure (one line + hint), 2 usage, 3 bug (traceback), 130 Ctrl-C (128+N
    for another stop signal N)."""
    from devsecrets import errors

    try:
        return body()
    except errors.DevsecretsError as e:
        if debug:
            import traceback

            traceback.print_exc()
        _stderr(errors.error_lines(e))
        return e.exit_code
    except KeyboardInterrupt as e:
        _stderr("devsecrets: interrupted\n")
        # a stop signal caught by the plaintext guard: 128+N, as a shell reports it
        return 128 + getattr(e, "signum", errors.EXIT_INTERRUPTED - 128)
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
