"""One run against a stack: read it, check the store, materialize, render, run compose.

Input: compose options, cwd, environment, store, identities. Output: `Session` (paths and
layout) and compose's exit code. Cleans up what it wrote when it fails; never prints.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from devsecrets import compose, materialize, runtime_dir
from devsecrets.errors import ComposeError, DevsecretsError, StoreError, UsageProblem
from devsecrets.layout import Layout, plan
from devsecrets.render import render, to_yaml
from devsecrets.runtime_dir import private_root
from devsecrets.stack import StackModel, read_model
from devsecrets.suggest import closest
from devsecrets.tmpfs import is_memory_backed

Warn = Callable[[str], None]
COMPOSE_CACHE = ".compose-version.json"  # in the runtime root, beside the project dirs


class MissingSecretsError(StoreError):
    pass


@dataclass(slots=True)
class Session:
    project: compose.ComposeProject
    model: StackModel
    layout: Layout
    project_dir: Path
    override: Path
    cwd: Path
    env: Mapping[str, str]
    created_dir: bool
    written: list[materialize.Written] = field(default_factory=list)
    values: dict[str, bytes] = field(default_factory=dict, repr=False)
    blocks: dict[str, str] = field(default_factory=dict)  # this render, see publish_override
    previous_blocks: dict[str, str] = field(default_factory=dict)  # the render before it
    # a shared lock on project_dir for this process's life: cleanup by others skips it
    held: runtime_dir.Held | None = field(default=None, repr=False)

    def argv(self, command: Sequence[str]) -> list[str]:
        return compose.build_argv(self.project, self.override, command)


def open_project(
    options: compose.ComposeOptions,
    cwd: Path,
    env: Mapping[str, str],
    *,
    need_engine: bool,
    cache: Path | None = None,
) -> tuple[compose.ComposeProject, StackModel]:
    """Find compose, read the model, check the engine. The three are independent process
    starts (~60 ms each), so they run side by side; errors are raised in that fixed order."""
    likely = compose.candidates(env)[:1]
    with ThreadPoolExecutor(max_workers=3) as pool:
        found_job = pool.submit(compose.find_compose, env, cache)
        model_job = None
        if likely:
            guess = compose.Compose(tuple(likely[0]), (0, 0, 0), likely[0][:1] == ["docker"])
            guess_project = compose.resolve_project(guess, options, cwd, env)
            model_job = pool.submit(compose.load_model, guess_project, env, cwd)
        engine_job = pool.submit(compose.check_engine, env) if need_engine else None
        found = found_job.result()
        project = compose.resolve_project(found, options, cwd, env)
        if model_job is not None and found.argv == tuple(likely[0]):
            model = model_job.result()
        else:
            model = compose.load_model(project, env, cwd)
        if engine_job is not None:
            engine_job.result()
    return project, read_model(model)


def prepare(
    options: compose.ComposeOptions,
    cwd: Path,
    env: Mapping[str, str],
    store_factory: Callable[[], Any],
    identities_factory: Callable[[], Any],
    *,
    allow_disk: bool,
    warn: Warn,
    validate: bool = True,
    check: Callable[[StackModel], object] | None = None,
) -> Session:
    """Everything before `compose up`: the secrets are on tmpfs and the override is written.

    `validate` runs `compose config` on the result; `up` skips it because compose checks the
    override itself a moment later, and reports its own error. `check` sees the model before
    anything is written (e.g. the x-devsecrets policies), so bad input leaves nothing behind."""
    root = private_root(env, allow_disk=allow_disk, warn=warn)
    project, model = open_project(options, cwd, env, need_engine=True, cache=root / COMPOSE_CACHE)
    if check is not None:
        check(model)
    store = store_factory()
    layout = plan(model, set(store.names()))
    if layout.missing:
        raise _missing_error(layout, store.names())
    for line in layout.warnings:
        warn(line)
    identities = identities_factory()
    values = {name: store.read(name, identities).value for name in sorted(layout.store_names())}
    for name, value in values.items():
        if not value:
            raise UsageProblem(
                f"secret {name} is empty; Swarm refuses empty secrets",
                hint=f"give it a value with `devsecrets set {name}`",
            )
    if not is_memory_backed(root):
        warn(f"--allow-disk: secrets are written to disk at {root}; `devsecrets down` removes them")
    clean_stale(root, project.compose, env, keep=model.project)
    project_dir = root / model.project
    created = not project_dir.exists()
    held = runtime_dir.hold(project_dir)
    try:
        previous_blocks = materialize.read_state(project_dir).get("blocks", {})
        written = materialize.materialize(project_dir, layout, values)
        for line in materialize.owner_warnings(layout):
            warn(line)
        override, blocks = publish_override(project_dir, layout)
        if validate:
            compose.validate_override(project, override, env, cwd)
    except BaseException:
        if created:
            materialize.wipe(project_dir)
        held.release()
        raise
    session = Session(project, model, layout, project_dir, override, cwd, env, created, written)
    session.held = held
    session.values = values
    session.blocks = blocks
    session.previous_blocks = previous_blocks
    return session


@contextlib.contextmanager
def wiped_on_error(session: Session, detached: bool) -> Iterator[None]:
    """Between `prepare` and `up`: an error or a stop signal there wipes what was written,
    unless it belongs to a detached stack that was already running."""
    try:
        yield
    except BaseException:
        if session.created_dir or not detached:
            materialize.wipe(session.project_dir)
        raise


def publish_override(project_dir: Path, layout: Layout) -> tuple[Path, dict[str, str]]:
    """Render once: write the override and record a digest of each service's part of it.
    When a service's digest changes, compose must recreate its containers (new mounts);
    when only files change, nothing must."""
    rendered = render(layout, project_dir)
    override = materialize.write_text(project_dir, materialize.OVERRIDE, to_yaml(rendered))
    blocks = {
        name: hashlib.sha256(json.dumps(block, sort_keys=True).encode()).hexdigest()
        for name, block in rendered["services"].items()
    }
    materialize.update_state(project_dir, blocks=blocks, project=layout.project)
    return override, blocks


def _missing_error(layout: Layout, known: Sequence[str]) -> MissingSecretsError:
    names = ", ".join(f"{n} ({', '.join(s)})" for n, s in layout.missing.items())
    commands = "; ".join(f"devsecrets set {n}" for n in layout.missing)
    typos = [f"{n}: did you mean {m!r}?" for n in layout.missing if (m := closest(n, known))]
    hint = f"{'; '.join(typos)} (a typo in the stack file?)" if typos else None
    return MissingSecretsError(
        f"the stack needs {len(layout.missing)} secret(s) the store lacks: {names}",
        hint=hint or f"add them: {commands}",
    )


def is_detached(args: Sequence[str]) -> bool:
    for arg in args:
        if arg in ("-d", "--detach", "--wait") or re.fullmatch(r"-[a-zA-Z]*d[a-zA-Z]*", arg):
            return True
        if arg == "--":
            break
    return False


def up(
    session: Session,
    args: Sequence[str],
    *,
    while_running: Callable[[Session], Any] | None = None,
) -> int:
    """`compose up ARGS` with the override. A foreground run wipes the secrets when it ends."""
    detached = is_detached(args)
    materialize.update_state(session.project_dir, pid=os.getpid(), detached=detached)
    if detached:
        code = compose.run(session.argv(["up", *args]), session.env, session.cwd)
        if code != 0 and session.created_dir:
            materialize.wipe(session.project_dir)
        return code
    try:
        return run_foreground(session.argv(["up", *args]), session, while_running)
    finally:
        materialize.wipe(session.project_dir)
        if session.held is not None:
            session.held.release()


def run_foreground(
    argv: Sequence[str], session: Session, while_running: Callable[[Session], Any] | None
) -> int:
    """Run compose as a child; Ctrl-C reaches it through the terminal, SIGTERM we forward.

    We wait for it in every case, so the caller's cleanup runs after compose has stopped."""
    try:
        child = subprocess.Popen(list(argv), env=dict(session.env), cwd=session.cwd)
    except OSError as e:
        raise ComposeError(f"could not run {argv[0]}: {e.strerror}") from e

    def forward(signum: int, frame: FrameType | None) -> None:
        child.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGHUP)}
    # On a terminal, Ctrl-C already reaches compose (same process group); forwarding it too
    # would count as a second Ctrl-C, which compose takes as "kill now".
    on_int = signal.SIG_IGN if sys.stdin.isatty() else forward
    previous[signal.SIGINT] = signal.signal(signal.SIGINT, on_int)
    stopper = None
    try:
        if while_running is not None:
            stopper = while_running(session)
        return child.wait()
    finally:
        if stopper is not None:
            stopper()
        if child.poll() is None:
            child.terminate()
            child.wait()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def run_passthrough(
    options: compose.ComposeOptions, cwd: Path, env: Mapping[str, str], args: Sequence[str]
) -> int:
    """A compose command that starts nothing: the override if the stack has one, no secrets
    written (so `devsecrets compose ps` on a stopped stack leaves no plaintext behind)."""
    project, model = open_project(options, cwd, env, need_engine=False)
    found = _existing_override(env, model.project)
    return compose.run(compose.build_argv(project, found, list(args)), env, cwd)


def _existing_override(env: Mapping[str, str], project: str) -> Path | None:
    try:
        root = private_root(env, allow_disk=False)
    except DevsecretsError:
        return None
    override = root / project / materialize.OVERRIDE
    return override if override.exists() else None


def down(
    options: compose.ComposeOptions,
    cwd: Path,
    env: Mapping[str, str],
    args: Sequence[str],
    *,
    allow_disk: bool,
) -> int:
    project, model = open_project(options, cwd, env, need_engine=False)
    project_dir = private_root(env, allow_disk=allow_disk) / model.project
    override = project_dir / materialize.OVERRIDE
    argv = compose.build_argv(project, override if override.exists() else None, ["down", *args])
    code = compose.run(argv, env, cwd)
    if code == 0:
        materialize.wipe(project_dir)
    return code


def clean_stale(
    root: Path, found: compose.Compose, env: Mapping[str, str], *, keep: str
) -> list[str]:
    """Remove runtime dirs left by a foreground run that was killed, once no container of
    that project exists any more. Detached stacks keep theirs until `devsecrets down`; a
    directory that a live process holds locked (up, watch, edit) or that devsecrets did not
    make is never touched (see runtime_dir.clean_stale)."""

    def is_stale(name: str, state: dict[str, Any]) -> bool:
        if state.get("detached") or _alive(state.get("pid")):
            return False
        return not _has_containers(name, found, env)

    return runtime_dir.clean_stale(root, keep, is_stale)


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _has_containers(project: str, found: compose.Compose, env: Mapping[str, str]) -> bool:
    if not found.uses_docker_cli:
        return True  # cannot ask cheaply: keep it
    out = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={project}"],
        capture_output=True,
        env=dict(env),
        timeout=60,
    )
    return out.returncode != 0 or bool(out.stdout.strip())
