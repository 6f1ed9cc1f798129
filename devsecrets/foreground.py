"""A foreground `up` that lasts as long as its services run, and secrets that last as long as
any container of the project uses them.

Input: the session, `up`'s arguments, the watch starter, a line reporter. Output: compose's
exit code. compose up runs as a child. It stops attaching once every container it follows has
stopped, which a restart (an on-change policy, `docker restart`) also does; when that happens
while those services run again, their logs are re-attached (`compose logs -f`) and the watch
goes on, until they stop or a stop signal arrives (then they are stopped, as compose up does).
At the end the runtime dir is wiped only if no container of the project runs any more:
services started earlier with `up -d` keep their secrets until `devsecrets down`.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from devsecrets import mask, process, runtime_dir
from devsecrets.errors import ComposeError, DevsecretsError

if TYPE_CHECKING:
    from devsecrets.mask import Masker
    from devsecrets.process import Stopper
    from devsecrets.session import Session

Report = Callable[[str], None]
# what signal.signal returns and takes back: a function, SIG_DFL/SIG_IGN, or None (not set
# from Python)
# `compose up` options that take a value: whatever else is not an option names a service
_WITH_VALUE = frozenset(
    {"--attach", "--exit-code-from", "--no-attach", "--pull", "--scale", "-t", "--timeout"}
    | {"--wait-timeout"}
)
RESTART_GRACE = 2.0  # how long a stopped service may take to come back from a restart
STOP_GRACE = 15.0  # how long compose may take to stop after a stop signal: its own 10 s, +5
STOP_TIMEOUT = 60.0  # `compose stop` after a stop signal, at most
SETTLE = 1.0  # after a stop: how long a container start still under way takes to show
# compose's docker CLI dies on SIGHUP/SIGQUIT and leaves its plugin running (see Child)
_FORWARD: dict[int, int] = {signal.SIGHUP: signal.SIGTERM, signal.SIGQUIT: signal.SIGTERM}


def up_services(args: Sequence[str]) -> tuple[str, ...]:
    """The services `compose up ARGS` was asked for; () means all of them."""
    named: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in _WITH_VALUE:
            skip = True
        elif not arg.startswith("-"):
            named.append(arg)
    return tuple(named)


def running_services(project: str, env: Mapping[str, str]) -> set[str] | None:
    """Services of `project` with a running container; None when the engine cannot say."""
    try:
        out = subprocess.run(
            ["docker", "ps", "--filter", f"label=com.docker.compose.project={project}",
             "--format", '{{.Label "com.docker.compose.service"}}'],
            capture_output=True, text=True, env=dict(env), timeout=60, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return {line for line in out.stdout.split() if line}


class Child:
    """Runs compose children in the foreground and passes our stop signals on to them.

    `docker compose` is the docker CLI with the compose plugin below it. The CLI passes
    SIGINT and SIGTERM on to the plugin, which then stops the containers; SIGHUP or SIGQUIT
    kill the CLI at once and leave the plugin running (measured with docker 20.10), and the
    plugin takes SIGQUIT as "dump goroutines and exit 2", containers left running. So a
    hang-up or Ctrl-\\ is forwarded as SIGTERM. On a terminal Ctrl-C already reached compose
    (same process group; forwarding it again would be compose's second Ctrl-C, "kill now").
    `stop` records the first signal; a child still running STOP_GRACE seconds after it is
    killed with everything below it (the caller then stops the containers itself)."""

    def __init__(self, env: Mapping[str, str], cwd: Path, masker: Masker | None = None) -> None:
        self.env, self.cwd, self.masker = dict(env), cwd, masker
        self.stop: int | None = None
        self._child: subprocess.Popen[bytes] | None = None
        self._guard: contextlib.AbstractContextManager[None] | None = None

    def __enter__(self) -> Child:
        tty = sys.stdin.isatty()

        def on_signal(signum: int, first: bool) -> None:
            self.stop = self.stop or signum
            child = self._child
            if child is not None and child.poll() is None and not (tty and signum == 2):
                child.send_signal(_FORWARD.get(signum, signum))

        self._guard = process.on_stop(on_signal)
        self._guard.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._guard is not None:
            self._guard.__exit__(None, None, None)

    def run(self, argv: Sequence[str], started: Callable[[], None] | None = None) -> int:
        if self.stop is not None:  # asked to stop before this child began: do not start it
            return 128 + self.stop
        threads: list[threading.Thread] = []
        if self.masker is not None:  # compose's output with current values shown as ****
            self._child = mask.popen(argv, self.env, self.cwd)
            threads = self.masker.attach(self._child)
        else:
            try:
                self._child = subprocess.Popen(list(argv), env=self.env, cwd=self.cwd)
            except OSError as e:
                raise ComposeError(f"could not run {argv[0]}: {e.strerror}") from e
        if self.stop is not None:  # the signal came while it was starting: pass it on
            self._child.send_signal(_FORWARD.get(self.stop, self.stop))
        try:
            if started is not None:
                started()
            return self._wait(self._child)
        finally:
            if self._child.poll() is None:
                self._child.terminate()
                try:
                    self._child.wait(timeout=STOP_GRACE)
                except subprocess.TimeoutExpired:
                    process.kill_tree(self._child)
            self._child = None
            # the output pipes close when compose ends; after a stop signal, a compose plugin
            # its docker CLI left running (a signal that killed the CLI first) holds them
            # until the containers are stopped below: do not wait for it here
            for thread in threads:
                thread.join(timeout=10 if self.stop is None else 1)

    def _wait(self, child: subprocess.Popen[bytes]) -> int:
        """The child's exit code; once a stop signal came, at most STOP_GRACE more seconds
        (compose can miss a signal that lands while it starts, or hang in a stop)."""
        deadline: float | None = None
        while True:
            if self.stop is not None and deadline is None:
                deadline = time.monotonic() + STOP_GRACE
            timeout = 0.5 if deadline is None else deadline - time.monotonic()
            try:
                return child.wait(timeout=max(timeout, 0))
            except subprocess.TimeoutExpired:
                if deadline is not None and time.monotonic() >= deadline:
                    process.kill_tree(child)
                    return child.wait()


def run(
    session: Session,
    args: Sequence[str],
    while_running: Callable[[], Stopper | None] | None,
    report: Report,
    masker: Masker | None = None,
) -> int:
    """`compose up ARGS` in the foreground, then its services' logs for as long as they run
    again after compose stopped following them. Returns compose up's exit code, or 128+N
    when a stop signal N came (the services this up started are then stopped)."""
    project = session.model.project
    services = up_services(args)
    stopper: Stopper | None = None

    def start_watch() -> None:
        nonlocal stopper
        if while_running is not None:
            stopper = while_running()

    stop: int | None = None
    try:
        with Child(session.env, session.cwd, masker) as child:
            code = child.run(session.argv(["up", *args]), started=start_watch)
            since = _now()

            def busy() -> bool:  # a restart of ours is under way, and no stop came
                return child.stop is None and bool(getattr(stopper, "busy", lambda: False)())

            while child.stop is None:
                alive = _still_running(project, services, session.env, busy)
                if not alive or child.stop is not None:
                    break
                names = sorted(alive)
                report(
                    f"compose stopped following {', '.join(names)} (restarted); "
                    "re-attaching their logs, still watching"
                )
                child.run(session.argv(["logs", "-f", "--since", since, *names]))
                since = _now()
            stop = child.stop
    finally:
        if stopper is not None:
            stopper()  # waits for restarts in flight: none may start a service after this
    if stop is not None:
        # as compose up does on Ctrl-C: what this up started stops (also when the signal cut
        # compose short, or came while we followed re-attached logs)
        _stop_ours(session, services, report)
        code = 128 + stop  # whatever compose made of it (130, 2 after a goroutine dump)
    return code


def _stop_ours(session: Session, services: tuple[str, ...], report: Report) -> None:
    """Stop the project's running services (ours of them), then look again after a moment:
    a start the engine had under way when a signal killed compose (SIGHUP, SIGQUIT) shows up
    only then, and must not outlive the wipe."""
    for round_ in range(3):
        running = running_services(session.model.project, session.env) or set()
        alive = running if not services else running & set(services)
        if not alive and round_ > 0:
            return
        if alive:
            try:
                subprocess.run(
                    session.argv(["stop", *sorted(alive)]), env=dict(session.env),
                    cwd=session.cwd, capture_output=True, check=False, timeout=STOP_TIMEOUT,
                )  # fmt: skip
            except (OSError, subprocess.TimeoutExpired) as e:  # release() then keeps them
                report(f"compose stop failed: {e.__class__.__name__}")
        time.sleep(SETTLE)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _still_running(
    project: str, services: tuple[str, ...], env: Mapping[str, str], busy: Callable[[], bool]
) -> set[str]:
    """Ours of the project's running services, once restarts in flight have finished."""
    deadline = time.monotonic() + 120
    while busy() and time.monotonic() < deadline:  # our own restart is still under way
        time.sleep(0.1)
    grace = time.monotonic() + RESTART_GRACE
    while True:
        running = running_services(project, env) or set()
        ours = running if not services else running & set(services)
        if ours or time.monotonic() > grace:
            return ours
        time.sleep(0.2)


def release(session: Session, report: Report, down_hint: str, wipe: Callable[[], None]) -> None:
    """After a foreground run: wipe the secrets, unless a container of the project still
    runs (started by `up -d`, or left running): then they stay, like a detached stack's."""
    running = running_services(session.model.project, session.env)
    if running:
        runtime_dir.update_state(session.project_dir, detached=True)
        report(
            f"{', '.join(sorted(running))} still running: their secrets stay until `{down_hint}`"
        )
        return
    wipe()  # the engine mode's helper and volume too, when the state records them


class NotRunningError(DevsecretsError):
    """`watch` over a project none of whose containers runs."""


def require_running(project: str, env: Mapping[str, str], start_hint: str) -> None:
    """`watch` follows a running stack: refuse before decrypting anything if none runs."""
    running = running_services(project, env)
    if running is not None and not running:
        raise NotRunningError(
            f"no container of project {project} is running; nothing to watch",
            hint=f"start it with `{start_hint}`, or name the project with -p",
        )
