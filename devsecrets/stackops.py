"""The stack commands besides `up`, `run` and `down`: `watch`, `build`, `render`, `compose`.

Each takes what the CLI parsed (`StackOptions` and its own arguments), cwd, environment, the
store and identities factories, and the `say`/`warn`/`spell` callables `pipeline.bring_up`
takes; it runs the pipeline's steps in order and returns an exit code (`render`: the
override's path). Never prints: every line for the user goes to `say`/`warn`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from devsecrets.errors import DevsecretsError

if TYPE_CHECKING:
    from devsecrets.compose import ComposeOptions
    from devsecrets.keys import Identities
    from devsecrets.pipeline import Handover, Say, Spell, Warn
    from devsecrets.session import Session
    from devsecrets.stack import Policy, StackModel
    from devsecrets.store import Store

# compose commands that create or start containers, which need the secrets on tmpfs; all
# others (ps, logs, exec, stop, kill…) only need the override, if there is one.
STARTS_CONTAINERS = frozenset({"up", "start", "restart", "run", "create"})


@dataclass(frozen=True, slots=True)
class StackOptions:
    """How to find the stack and where its secrets live, parsed (compose's global flags,
    --allow-disk, --engine-mode, --helper-image)."""

    compose: ComposeOptions
    allow_disk: bool = False
    engine_mode: str | None = None
    helper_image: str | None = None


@dataclass(frozen=True, slots=True)
class StackContext:
    """Where a command runs: the parsed options, cwd, environment and the lazy store and
    identities (resolved only by the commands that read values)."""

    options: StackOptions
    cwd: Path
    env: Mapping[str, str]
    store: Callable[[], Store]
    identities: Callable[[], Identities]


def _prepare(
    stack: StackContext,
    warn: Warn,
    *,
    validate: bool = True,
    running: Spell | None = None,
    building: bool = False,
    handover: Handover | None = None,
) -> Session:
    """Materialize and render. The stack's on-change policies are read with the stack (and
    the command line's parsed by the caller), so bad ones fail before anything is written.
    With `running` (the speller of the hint), a project none of whose containers runs is
    refused before that too."""
    from devsecrets.foreground import require_running
    from devsecrets.pipeline import prepare

    def check(model: StackModel) -> None:
        if running is not None:
            require_running(model.project, stack.env, running("up -d", model.project))

    options = stack.options
    return prepare(
        options.compose,
        stack.cwd,
        stack.env,
        stack.store,
        stack.identities,
        allow_disk=options.allow_disk,
        warn=warn,
        validate=validate,
        engine_mode_flag=options.engine_mode,
        helper_image=options.helper_image,
        check=check,
        building=building,
        handover=handover,
    )


def watch_stack(
    stack: StackContext, policies: Mapping[str, Policy], *, say: Say, warn: Warn, spell: Spell
) -> int:
    """`devsecrets watch`: follow store and stack changes for a running stack until a stop
    signal; 128+N for signal N. A project none of whose containers runs is refused before
    anything is decrypted."""
    from devsecrets.live import LiveStack, start_watching
    from devsecrets.process import plaintext_guard, stop_signals

    with plaintext_guard():  # a stop signal before the watch begins ends it too (128+N)
        session = _prepare(stack, warn, running=spell)
        live = LiveStack(session, stack.store(), stack.identities(), policies, report=say)
        live.catch_up()
        with stop_signals() as wait:
            stop = start_watching(live)
            say(f"watching {live.store.root} and the stack files; Ctrl-C to stop")
            try:
                signum = wait()
            finally:
                stop()
    return 128 + signum


def build_stack(
    stack: StackContext, args: tuple[str, ...], *, mask: bool, say: Say, warn: Warn
) -> int:
    """`build` and `compose build`: the build secrets on tmpfs, compose's output masked
    (unless not `mask`). compose's exit code."""
    from devsecrets.mask import Masker
    from devsecrets.pipeline import build_images, wiped_on_error
    from devsecrets.process import plaintext_guard

    with plaintext_guard():  # a stop signal from here on wipes what was written
        with wiped_on_error(None, detached=True) as handover:  # only what this build wrote
            session = _prepare(stack, warn, validate=False, building=True, handover=handover)
            if session.choice is not None:
                say(session.choice.line())
            names = ", ".join(f.key for f in session.layout.build.files) or "none"
            say(f"build secrets: {names}")
            masker = Masker(lambda: session.values) if mask else None
        return build_images(session, args, masker)


def render_stack(stack: StackContext, *, check: bool, say: Say, warn: Warn) -> Path:
    """`devsecrets render`: the secrets on tmpfs and the override written; its path.
    `check` has compose check the stack with the override applied."""
    from devsecrets.process import plaintext_guard

    with plaintext_guard():  # interrupted before the end: nothing is left behind
        session = _prepare(stack, warn, validate=check)
    if session.choice is not None:
        say(session.choice.line())
    return session.override


def compose_passthrough(
    stack: StackContext, args: tuple[str, ...], *, mask: bool, say: Say, warn: Warn
) -> int:
    """`devsecrets compose ARGS`: any compose command with the override applied. `up` as
    `devsecrets up --no-watch`, `build` as `devsecrets build`, the other commands that start
    containers with the secrets materialized first, the rest with the override if there is
    one (`logs` masked with every value this user can decrypt). compose's exit code."""
    from devsecrets import compose
    from devsecrets.live import redeploy
    from devsecrets.mask import Masker
    from devsecrets.pipeline import run_passthrough, start_stack, wiped_on_error
    from devsecrets.process import plaintext_guard

    if args[0] == "up":  # like `devsecrets up --no-watch`: wiped when it ends
        with plaintext_guard(), wiped_on_error(None, compose.is_detached(args[1:])) as handover:
            session = _prepare(stack, warn, validate=False, handover=handover)
            masker = Masker(lambda: session.values) if mask else None

            def again() -> None:  # Swarm's model, as `up` applies it
                redeploy(session, stack.store(), stack.identities(), {}, say)

            return start_stack(session, args[1:], masker=masker, redeploy=again, handover=handover)
    if args[0] == "build":  # the build secrets from the store, as `devsecrets build`
        return build_stack(stack, args[1:], mask=mask, say=say, warn=warn)
    if args[0] in STARTS_CONTAINERS:  # these mount secrets: materialize them first
        with plaintext_guard():
            session = _prepare(stack, warn)
        return compose.run(session.argv(args), stack.env, stack.cwd)
    masker = None
    if args[0] == "logs" and mask:
        values = _readable_values(stack)
        masker = Masker(lambda: values)
    return run_passthrough(stack.options.compose, stack.cwd, stack.env, args, masker)


def _readable_values(stack: StackContext) -> dict[str, bytes]:
    """Every value this user can decrypt, for masking; unreadable ones are skipped."""
    values: dict[str, bytes] = {}
    try:
        store = stack.store()
        names = store.names()
    except DevsecretsError:
        return values
    for name in names:
        try:
            values[name] = store.read(name, stack.identities()).value
        except DevsecretsError:
            continue
    return values
