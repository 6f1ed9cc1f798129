"""Run a stack with its secrets: the steps in order, and nothing else.

open the project (`project`) -> what it needs (`needs`, `layout`) -> the values (`store`) ->
files on tmpfs (`materialize`) -> the override (`override`) -> compose (`compose`, `process`).
Input: compose options, cwd, environment, store, identities. Output: `Session` and compose's
exit code. Cleans up what it wrote when it fails; never prints (warnings go to `warn`).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devsecrets import (
    compose,
    compose_gate,
    engine_mode,
    engine_prestart,
    engine_store,
    fastget,
    mask,
    materialize,
    runtime_dir,
)
from devsecrets.errors import DevsecretsError
from devsecrets.layout import Layout, plan
from devsecrets.mask import Masker
from devsecrets.needs import missing_error
from devsecrets.override import gate_text, publish_override, publish_pending
from devsecrets.process import Stopper, is_alive
from devsecrets.project import open_project
from devsecrets.runtime_dir import private_root
from devsecrets.session import Session
from devsecrets.stack import Policy, StackModel
from devsecrets.tmpfs import is_memory_backed

if TYPE_CHECKING:
    from devsecrets.keys import Identities
    from devsecrets.live import LiveStack
    from devsecrets.store import Store

Warn = Callable[[str], None]
Say = Callable[[str], None]
# (command, project) -> the devsecrets command line a user types for it, e.g. "watch" ->
# `devsecrets watch -f stack.yml`: the CLI spells it with the flags that found the stack
Spell = Callable[[str, str], str]


@dataclass(frozen=True, slots=True)
class UpOptions:
    """What `up` was asked for, parsed."""

    compose: compose.ComposeOptions
    args: tuple[str, ...] = ()  # `docker compose up`'s own arguments
    policies: Mapping[str, Policy] = field(default_factory=dict)  # --on-change, parsed
    watch: bool = True  # follow store and stack changes in the foreground
    mask: bool = True  # values in compose's output shown as ****
    allow_disk: bool = False
    engine_mode: str | None = None
    helper_image: str | None = None


def bring_up(
    options: UpOptions,
    cwd: Path,
    env: Mapping[str, str],
    store_factory: Callable[[], Store],
    identities_factory: Callable[[], Identities],
    *,
    say: Say,
    warn: Warn,
    spell: Spell,
) -> int:
    """`devsecrets up`: prepare, apply what changed over containers an earlier run left (as
    Swarm would), start compose (in the foreground with the watcher and the masker).
    compose's exit code; every line for the user goes to `say`/`warn`."""
    from devsecrets.live import LiveStack, redeploy, start_watching
    from devsecrets.process import plaintext_guard

    detached = compose.is_detached(options.args)

    def live(session: Session) -> LiveStack:
        return LiveStack(session, store_factory(), identities_factory(), options.policies, say)

    with plaintext_guard(), wiped_on_error(None, detached) as handover:
        # a stop signal from here on wipes what was written
        session = prepare(
            options.compose,
            cwd,
            env,
            store_factory,
            identities_factory,
            allow_disk=options.allow_disk,
            warn=warn,
            validate=False,
            engine_mode_flag=options.engine_mode,
            helper_image=options.helper_image,
            building="--build" in options.args,  # build secrets the store lacks: an error
            handover=handover,
            early_up=("up", *options.args) if detached else None,
        )
        if session.choice is not None:
            say(session.choice.line())
        say(summary(session))
        project = session.model.project
        if detached and options.watch:
            say(f"detached; run `{spell('watch', project)}` to follow store changes")
        watching = live(session) if options.watch and not detached else None
        hook = (lambda: start_watching(watching)) if watching else None
        live_values = watching.values if watching else {}
        masker = Masker(lambda: {**session.values, **live_values}) if options.mask else None
        return start_stack(  # inside: no moment between the two cleanups
            session,
            options.args,
            while_running=hook,
            masker=masker,
            report=say,
            down_hint=spell("down", project),
            # over containers an earlier run left: applied as a re-run `docker stack deploy`
            redeploy=lambda: redeploy(
                session, store_factory(), identities_factory(), options.policies, say
            ),
            handover=handover,
        )


def summary(session: Session) -> str:
    """`3 secret mount(s) for api, worker in /dev/shm/…`: what `up` prepared, names only."""
    count = sum(len(s.files) for s in session.layout.services)
    services = ", ".join(s.service for s in session.layout.services) or "none"
    engine = session.engine
    where = session.project_dir if engine is None else f"the engine's tmpfs volume {engine.volume}"
    return f"{count} secret mount(s) for {services} in {where}"


def prepare(
    options: compose.ComposeOptions,
    cwd: Path,
    env: Mapping[str, str],
    store_factory: Callable[[], Store],
    identities_factory: Callable[[], Identities],
    *,
    allow_disk: bool,
    warn: Warn,
    validate: bool = True,
    engine_mode_flag: str | None = None,
    helper_image: str | None = None,
    check: Callable[[StackModel], None] | None = None,
    building: bool = False,
    handover: Handover | None = None,
    early_up: Sequence[str] | None = None,
) -> Session:
    """Everything before `compose up`: the secrets are on tmpfs and the override is written.

    `validate` runs `compose config` on the result; `up` skips it because compose checks the
    override itself a moment later, and reports its own error. `check` sees the model before
    the store is read (`watch`: is the project running?). `building`: build secrets the
    store lacks are an error (else a warning: an image already built needs none).
    `early_up`: in engine mode, compose runs this command from the start of the values'
    write, held at a gate (`compose_gate`) that `start_stack` opens."""
    root = private_root(env, allow_disk=allow_disk, warn=warn)
    cache = root / runtime_dir.COMPOSE_CACHE
    pending = engine_mode.start(engine_mode_flag, env, root)  # the probe runs meanwhile
    try:
        # a running probe also tells whether an engine answers: no separate check then
        need_engine = pending.proc is None
        project, model = open_project(options, cwd, env, need_engine=need_engine, cache=cache)
        if check is not None:
            check(model)
        choice = pending.result()
    finally:
        pending.cancel()
    store = store_factory()
    in_store = store.names()
    layout = plan(model, set(in_store))
    if layout.missing:
        raise missing_error(layout.missing, in_store)
    if layout.build.missing and building:
        raise missing_error(layout.build.missing, in_store)
    for name, services in layout.build.missing.items():
        warn(f"the store lacks build secret {name}: building {', '.join(services)} will fail")
    for finding in layout.warnings:
        warn(finding.message)
    values = _read_values(store, sorted(layout.store_names()), env, identities_factory)
    if not is_memory_backed(root):
        warn(f"--allow-disk: secrets are written to disk at {root}; `devsecrets down` removes them")
    clean_stale(root, project.compose, env, keep=model.project)
    sweeper = None
    if choice.mode == engine_mode.ENGINE:  # helpers whose runtime directory here is gone,
        sweeper = threading.Thread(  # swept while this project's helper starts
            target=_sweep, args=(env, root, model.project, project.compose), daemon=True
        )
        sweeper.start()
    try:
        return _prepare_dir(
            project, model, layout, values, root, env, cwd, choice, helper_image, validate, warn,
            handover, early_up,
        )  # fmt: skip
    finally:
        if sweeper is not None:
            sweeper.join()


def _read_values(
    store: Store, names: list[str], env: Mapping[str, str], identities: Callable[[], Identities]
) -> dict[str, bytes]:
    """The lean reader (`fastget`: 1,000 secrets in a fraction of the full reader's time) for
    the files devsecrets writes; the store's reader, which says what is wrong, for the rest
    and for an empty value (Swarm refuses it: `read_value`)."""
    values = fastget.read_values(str(store.root), names, env) if names else {}
    if values is None or not all(values.values()):
        found = identities()
        values = {name: store.read_value(name, found) for name in names}
    return values


def _sweep(env: Mapping[str, str], root: Path, keep: str, found: compose.Compose) -> None:
    with contextlib.suppress(DevsecretsError):
        engine_store.sweep(
            env, root, keep=keep, in_use=lambda p: compose.has_containers(p, found, env)
        )


def _prepare_dir(
    project: compose.ComposeProject,
    model: StackModel,
    layout: Layout,
    values: dict[str, bytes],
    root: Path,
    env: Mapping[str, str],
    cwd: Path,
    choice: engine_mode.EngineChoice,
    helper_image: str | None,
    validate: bool,
    warn: Warn,
    handover: Handover | None,
    early_up: Sequence[str] | None,
) -> Session:
    project_dir = root / model.project
    created = not project_dir.exists()
    held = runtime_dir.hold(project_dir)
    engine = None
    gated = None
    try:
        previous_blocks = runtime_dir.read_state(project_dir).get("blocks", {})
        if choice.mode == engine_mode.ENGINE:
            record = engine_store.recorded(runtime_dir.read_state(project_dir)) or {}
            engine = engine_store.ensure(
                model.project,
                env,
                engine_store.image(helper_image, env),
                needed=engine_store.needed(values, layout),
                size=engine_store.volume_size(values, layout),
                client=engine_store.client_id(root),
                volume=record.get("volume"),  # what it holds is known only for this one
                hints=root,
            )
        else:
            engine_prestart.drop(env)  # started on a guess that was wrong (once per engine)
            engine_store.forget(project_dir, model.project, env)  # was engine mode before
        if engine is not None and early_up is not None and compose_gate.supported():
            # compose starts now and waits at its gate, on an override whose binds name a
            # directory that never exists: only the gate's text, the real binds sent once the
            # values are in (start_stack), names the real ones (compose_gate)
            unreleased = Path(str(engine.data_dir), compose_gate.UNRELEASED)
            pending = publish_pending(project_dir, layout, unreleased)
            gated = compose_gate.GatedUp(
                compose.build_argv(project, pending, []), early_up, env, cwd
            )
        written = engine_store.materialize_for(project_dir, engine, layout, values, env)
        if engine is not None:  # its mountpoint, checked while the values were written
            engine = engine_store.confirm(engine)
        if engine is None:
            for line in materialize.owner_warnings(layout, lambda: engine_mode.rootless_as_me(env)):
                warn(line)
        bind_root = project_dir if engine is None else Path(str(engine.data_dir))
        override, blocks = publish_override(project_dir, layout, bind_root)
        if validate:
            compose.validate_override(project, override, env, cwd)
        session = Session(
            project=project,
            model=model,
            layout=layout,
            project_dir=project_dir,
            override=override,
            cwd=cwd,
            env=env,
            created_dir=created,
            written=tuple(written),
            values=values,
            blocks=blocks,
            previous_blocks=previous_blocks,
            held=held,
            choice=choice,
            engine=engine,
            gated=gated,
        )
        if handover is not None:  # the caller's cleanup covers it from here
            handover.session = session
    except BaseException:
        if gated is not None:
            gated.cancel()
        if created:
            wipe(project_dir, model.project, env)
        held.release()
        raise
    return session


def wipe(project_dir: Path, project: str, env: Mapping[str, str], *, orphans: bool = False) -> None:
    """Remove the project's secrets: the engine mode's helper and volume if the project's
    state records them (with `orphans`, also when there is no state), then the runtime
    directory."""
    engine_store.forget(project_dir, project, env, orphans=orphans)
    runtime_dir.wipe(project_dir)


class Handover:
    """Who wipes on an error or a stop signal: `wiped_on_error`, until `start_stack` takes
    over inside its own cleanup (`taken`). One flag, so no moment is covered by neither."""

    def __init__(self, session: Session | None) -> None:
        self.session = session  # set by `prepare` inside its own cleanup, when given this
        self.taken = False


@contextlib.contextmanager
def wiped_on_error(session: Session | None, detached: bool) -> Iterator[Handover]:
    """Between `prepare` and `start_stack`: an error or a stop signal there wipes what was
    written, unless it belongs to a detached stack that was already running, or
    `start_stack` (called inside, given the handover) has taken over. Call `prepare` inside
    too, with the handover (session None): it hands the session over before its own cleanup
    ends, so no moment is covered by neither."""
    handover = Handover(session)
    try:
        yield handover
    except BaseException:
        done = handover.session
        if done is not None and done.gated is not None:
            done.gated.cancel()  # held at its gate, compose must not go on (no-op once released)
        if done is not None and not handover.taken and (done.created_dir or not detached):
            wipe(done.project_dir, done.model.project, done.env)
        raise


def start_stack(
    session: Session,
    args: Sequence[str],
    *,
    while_running: Callable[[], Stopper | None] | None = None,
    masker: Masker | None = None,
    report: Callable[[str], None] | None = None,
    down_hint: str = "devsecrets down",
    redeploy: Callable[[], None] | None = None,
    handover: Handover | None = None,
) -> int:
    """`compose up ARGS` with the override. A foreground run lasts while its services run
    (see foreground.py) and wipes the secrets when it ends, unless a container of the
    project still runs. With a `masker`, compose's output passes through it (values shown
    as ****). `redeploy` runs first, detached or not: over containers an earlier run left
    running, it applies what changed since (live.redeploy: Swarm's model)."""
    detached = compose.is_detached(args)
    argv = session.argv(["up", *args])
    if detached:
        if handover is not None:  # from here an interrupted `up -d` keeps what it wrote,
            # unless compose made nothing yet (below)
            handover.taken = True
        try:
            runtime_dir.update_state(session.project_dir, pid=os.getpid(), detached=detached)
            if redeploy is not None:
                redeploy()
            if session.gated is not None:  # started by `prepare`, waiting for the real binds
                gate = gate_text(session.project_dir, session.layout, session.bind_root)
                code = session.gated.release(gate)
            else:
                code = compose.run(argv, session.env, session.cwd)
        except KeyboardInterrupt:  # a first `up -d` stopped before compose made anything
            if session.created_dir and not compose.has_containers(
                session.model.project, session.project.compose, session.env
            ):
                wipe(session.project_dir, session.model.project, session.env)
            raise
        engine_store.close_all()  # a helper this run started keeps running, detached
        if code != 0 and session.created_dir:
            wipe(session.project_dir, session.model.project, session.env)
        return code
    say = report or (lambda line: None)
    try:  # a stop signal while foreground loads or the state is written wipes too
        if handover is not None:  # the `finally` below decides from here
            handover.taken = True
        from devsecrets import foreground

        runtime_dir.update_state(session.project_dir, pid=os.getpid(), detached=detached)
        if redeploy is not None:
            redeploy()
        return foreground.run(session, args, while_running, say, masker)
    finally:
        from devsecrets import foreground  # loaded by now, or loaded here: the release must run

        foreground.release(
            session,
            say,
            down_hint,
            lambda: wipe(session.project_dir, session.model.project, session.env),
        )
        if session.held is not None:
            session.held.release()


def build_images(session: Session, args: Sequence[str], masker: Masker | None = None) -> int:
    """`compose build ARGS` with the override, so the services' `build.secrets` read the
    store's values from tmpfs. The secrets are wiped afterwards unless the project's
    directory was there before (a running stack's). Compose's exit code."""
    try:
        argv = session.argv(["build", *args])
        if masker is not None:  # a RUN step that prints its secret
            return mask.run(argv, session.env, session.cwd, masker)
        return compose.run(argv, session.env, session.cwd)
    finally:
        if session.created_dir:
            wipe(session.project_dir, session.model.project, session.env)
        if session.held is not None:
            session.held.release()


def run_passthrough(
    options: compose.ComposeOptions,
    cwd: Path,
    env: Mapping[str, str],
    args: Sequence[str],
    masker: Masker | None = None,
) -> int:
    """A compose command that starts nothing: the override if the stack has one, no secrets
    written (so `devsecrets compose ps` on a stopped stack leaves no plaintext behind)."""
    project, model = open_project(options, cwd, env, need_engine=False)
    found = runtime_dir.existing_override(env, model.project)
    argv = compose.build_argv(project, found, list(args))
    if masker is not None:
        return mask.run(argv, env, cwd, masker)
    return compose.run(argv, env, cwd)


def stop_stack(
    options: compose.ComposeOptions,
    cwd: Path,
    env: Mapping[str, str],
    args: Sequence[str],
    *,
    allow_disk: bool,
) -> int:
    """`compose down ARGS`, then wipe the project's secrets (only if compose succeeded)."""
    project, model = open_project(options, cwd, env, need_engine=False)
    project_dir = private_root(env, allow_disk=allow_disk) / model.project
    override = project_dir / materialize.OVERRIDE
    argv = compose.build_argv(project, override if override.exists() else None, ["down", *args])
    code = compose.run(argv, env, cwd)
    if code == 0:
        wipe(project_dir, model.project, env, orphans=True)
    return code


def clean_stale(
    root: Path, found: compose.Compose, env: Mapping[str, str], *, keep: str
) -> list[str]:
    """Remove runtime dirs left by a foreground run that was killed, once no container of
    that project exists any more. Detached stacks keep theirs until `devsecrets down`; a
    directory that a live process holds locked (up, watch, edit) or that devsecrets did not
    make is never touched (see runtime_dir.clean_stale)."""

    def is_stale(name: str, state: dict[str, Any]) -> bool:
        if state.get("detached") or is_alive(state.get("pid")):
            return False
        if compose.has_containers(name, found, env):
            return False
        if engine_store.recorded(state) is not None:
            try:
                engine_store.remove(name, env)  # its helper and volume go with it
            except DevsecretsError:
                return False  # kept for a later run
        return True

    return runtime_dir.clean_stale(root, keep, is_stale)
