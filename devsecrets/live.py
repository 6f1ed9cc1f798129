"""Live secrets: keep a running stack's secrets equal to the store and the stack files.

Input: a prepared `Session` (read, never changed), the store, identities, per-service
policies. Output: files replaced atomically in the runtime dir, compose restarts/signals/
recreates, and one line per event (names only). `LiveStack` owns the current state (model,
layout, render digests, values). Never raises out of a batch: a bad file keeps the last good
value served.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from devsecrets import compose, engine_store, materialize, runtime_dir
from devsecrets.errors import DevsecretsError, StackError, UsageProblem, reason
from devsecrets.layout import Layout, plan
from devsecrets.override import publish_override
from devsecrets.stack import NO_POLICY, Action, Policy, read_model
from devsecrets.store import LOCK_FILE, RECIPIENTS_FILE, SUFFIX

if TYPE_CHECKING:
    from devsecrets.keys import Identities
    from devsecrets.session import Session
    from devsecrets.store import Store
    from devsecrets.watch import Watcher

Report = Callable[[str], None]


def policies(from_stack: Mapping[str, Policy], from_cli: Mapping[str, Policy]) -> dict[str, Policy]:
    return {**from_stack, **from_cli}  # the command line wins over the stack file


def parse_cli_policies(items: Sequence[str]) -> dict[str, Policy]:
    """`--on-change SERVICE=POLICY` options; a bad one is a usage error."""
    table = {}
    for item in items:
        service, sep, policy = item.partition("=")
        if not sep or not service:
            raise UsageProblem(f"--on-change {item!r}: expected SERVICE=POLICY")
        table[service] = Policy.parse(policy, f"--on-change {item}", UsageProblem)
    return table


def _stamp(store: Store, name: str) -> bytes | None:
    """The encrypted file's bytes: unchanged bytes need no decryption. (Not inode+mtime:
    inodes are reused and mtime is coarse, so two quick writes can look identical.) Read as
    the store reads (no symlink followed, regular files only, capped): a committed symlink to
    /dev/zero must not exhaust the watcher's memory."""
    try:
        return store.raw(name)
    except DevsecretsError:
        return None


class LiveStack:
    def __init__(
        self,
        session: Session,
        store: Store,
        identities: Identities,
        cli_policies: Mapping[str, Policy],
        report: Report,
    ) -> None:
        self.session = session  # how the stack was started: project, paths, environment
        self.store = store
        self.identities = identities
        self.cli_policies = dict(cli_policies)
        self.report = report
        self.values: dict[str, bytes] = dict(session.values)
        self.stamps = {n: _stamp(store, n) for n in self.values}
        self.problems: dict[str, str] = {}
        # the current state, which starts as prepared and is this object's from then on
        self.model = session.model
        self.layout = session.layout
        self.blocks: Mapping[str, str] = session.blocks  # the override now on disk
        self.policies = policies(self.model.on_change, self.cli_policies)
        # what the running containers were created with: `up` creates them from this render;
        # `watch` and a re-run `up -d` compare with what the last run recorded (catch_up)
        self.applied_specs = service_specs(session.layout, session.blocks)
        recorded = runtime_dir.read_state(session.project_dir).get("specs")
        self.recorded_specs: dict[str, str] | None = (
            recorded if isinstance(recorded, dict) else None
        )
        # fixed for the session (the file list is resolved once), asked for on every event
        self.stack_files = self._stack_paths()
        # the stack asked for secrets the store lacked: re-plan when the store changes
        self.stack_pending = False
        self._missing: dict[str, tuple[str, ...]] = {}
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._serial = threading.Lock()  # one batch at a time, whichever thread runs it
        # restarts, signals and recreates run here, one at a time, never on the watch thread
        self._actions = ThreadPoolExecutor(max_workers=1, thread_name_prefix="devsecrets-act")

    # -- what to watch --------------------------------------------------------------------

    def _stack_paths(self) -> set[Path]:
        project = self.session.project
        paths = {p.resolve() for p in project.files}
        # compose reads .env from the working dir and from the project dir (the first file's)
        for directory in {self.session.cwd, *(p.parent for p in project.files[:1])}:
            paths.add((directory / ".env").resolve())
        return paths

    def directories(self) -> list[Path]:
        return [self.store.root, *{p.parent for p in self.stack_files}]

    def wanted(self, path: Path) -> bool:
        if path.name.startswith("."):  # temp files, editors' swap files, the lock
            return path.name == ".env" and path.resolve() in self.stack_files
        if path.parent.resolve() == self.store.root.resolve():
            return path.name.endswith(SUFFIX) or path.name == RECIPIENTS_FILE
        return path.resolve() in self.stack_files

    def catch_up(self) -> None:
        """For `watch` or a re-run `up -d` over a stack started earlier: apply what changed
        since the last run recorded its specs, as Swarm would (changed sources: recreate;
        changed values under the same names: swap in place, then the on-change policy)."""
        session = self.session
        with self._serial:
            if self.recorded_specs is None or session.created_dir:
                self.record()  # nothing earlier to compare: the containers are what up made
                return
            changed = self._recreate(self.recorded_specs, self.applied_specs)
            running = self._running()  # a stopped service is not started by a new value
            skip = set(changed) | (set() if running is None else set(self.blocks) - running)
            self._apply_values(session.written, skip=skip)

    def record(self) -> None:
        """Remember what the running containers were made from, for the next catch_up."""
        runtime_dir.update_state(self.session.project_dir, specs=self.applied_specs)

    # -- one batch ------------------------------------------------------------------------

    def on_batch(self, paths: set[Path]) -> None:
        """The watcher's callback: never lets an error out (the stack keeps running)."""
        try:
            stack_changed = any(p.resolve() in self.stack_files for p in paths)
            with self._serial:
                self.reconcile(stack_changed=stack_changed or self.stack_pending)
        except DevsecretsError as e:
            self.report(f"error: {e.message}; still serving the last good values")
        except Exception as e:  # noqa: BLE001 - a watcher bug must not stop the stack
            self.report(f"internal error ({e.__class__.__name__}); still watching")

    def reconcile(self, *, stack_changed: bool) -> None:
        layout = self.layout
        if stack_changed:
            layout = self._reload_stack() or layout
        with self.store.settled():  # a multi-secret `set` is read whole, never half
            values = self._read_values(layout)
        session = self.session
        written = engine_store.materialize_for(
            session.project_dir, session.engine, layout, values, session.env
        )
        recreate: list[str] = []
        if layout is not self.layout or stack_changed:
            recreate = self._apply_layout(layout)
        self._apply_values(written, skip=set(recreate))

    def _reload_stack(self) -> Layout | None:
        session = self.session
        try:
            model = read_model(compose.load_config(session.project, session.env, session.cwd))
        except StackError as e:
            self.report(f"stack: {e.message}; keeping the running layout")
            return None
        layout = plan(model, set(self.store.names()))
        repeated = self.stack_pending and layout.missing == self._missing
        self.stack_pending = bool(layout.missing)  # re-planned on each store change
        self._missing = dict(layout.missing)
        if layout.missing:
            names = ", ".join(layout.missing)
            if not repeated:
                self.report(
                    f"stack needs {names}, which the store lacks; keeping the running layout "
                    f"until it is stored (`devsecrets set {next(iter(layout.missing))}`)"
                )
            return None
        self.model = model
        self.policies = policies(model.on_change, self.cli_policies)
        return layout

    def _read_values(self, layout: Layout) -> dict[str, bytes]:
        values: dict[str, bytes] = {}
        for name in sorted(layout.store_names()):
            stamp = _stamp(self.store, name)
            if name in self.values and stamp == self.stamps.get(name) and stamp is not None:
                values[name] = self.values[name]
                continue
            try:
                value = self.store.read_value(name, self.identities)
            except DevsecretsError as e:
                if name not in self.values:
                    raise
                problem = e.message
                if self.problems.get(name) != problem:
                    self.problems[name] = problem
                    self.report(f"{name}: {problem}; still serving the last good value")
                values[name] = self.values[name]
                continue
            self.problems.pop(name, None)
            self.values[name] = values[name] = value
            self.stamps[name] = stamp
        return values

    def _apply_layout(self, layout: Layout) -> list[str]:
        self.layout = layout
        _, self.blocks = publish_override(self.session.project_dir, layout, self.session.bind_root)
        changed = self._recreate(self.applied_specs, service_specs(layout, self.blocks))
        if not changed:
            self.report("stack changed → secrets updated in place")
        return changed

    def _recreate(self, before: Mapping[str, str], after: dict[str, str]) -> list[str]:
        """Recreate the services whose secret specs differ (see service_specs); returns them."""
        changed = sorted(s for s in after if before.get(s) != after[s])
        changed += sorted(s for s in before if s not in after)  # no secrets any more
        self.applied_specs = after
        self.record()
        if changed:

            def recreate() -> None:
                running = self._running()  # one not running gets the new spec when started
                now = [s for s in changed if running is None or s in running]
                if now:
                    ok = self._compose(["up", "-d", "--no-deps", "--force-recreate", *now])
                    outcome = "recreated" if ok else "recreate failed"
                    self.report(f"stack changed → {', '.join(now)} ({outcome})")
                if later := [s for s in changed if s not in now]:
                    self.report(f"stack changed → {', '.join(later)} (not running)")

            self._later(recreate)
        return changed

    def _running(self) -> set[str] | None:
        from devsecrets.foreground import running_services

        return running_services(self.session.model.project, self.session.env)

    def _apply_values(self, written: Sequence[materialize.Written], skip: set[str]) -> None:
        """One batch: every file is already swapped. Each service gets at most one restart or
        one signal for the whole batch, run off this thread so the next batch never waits."""
        changed: dict[str, set[str]] = {}  # secret -> services that see a new value
        pinned: set[str] = set()  # single-file binds: only a restart shows the new value
        for item in written:
            if item.changed:
                service = item.mounted.grant.service
                changed.setdefault(item.mounted.store_name, set()).add(service)
                if not item.mounted.in_secrets_dir:
                    pinned.add(service)
        if not changed:
            return
        services = sorted(set().union(*changed.values()) - skip)
        restart = [s for s in services if s in pinned or self._policy(s).action is Action.RESTART]
        signals = {
            s: str(self._policy(s).signal)
            for s in services
            if s not in restart and self._policy(s).action is Action.SIGNAL
        }
        what = _describe(changed)
        if restart or signals:
            self._later(lambda: self._act(what, restart, signals))
        else:
            self.report(what)

    def _policy(self, service: str) -> Policy:
        return self.policies.get(service, NO_POLICY)

    def _act(self, what: str, restart: list[str], signals: dict[str, str]) -> None:
        sent = []
        for service, sig in signals.items():  # signals first: they take milliseconds
            ok = self._compose(["kill", "-s", sig, service])
            sent.append(f"{sig} {'sent' if ok else 'failed'}: {service}")
        notes = []
        if restart:
            ok = self._compose(["restart", *restart])
            notes.append(f"{'restarted' if ok else 'restart failed'}: {', '.join(restart)}")
        self.report(f"{what} ({'; '.join(notes + sent)})")

    def _later(self, job: Callable[[], None]) -> None:
        """Run a restart/signal/recreate on the actions thread, in order, reporting bugs."""

        def run() -> None:
            try:
                job()
            except Exception as e:  # noqa: BLE001 - a bug here must not stop the watch
                self.report(f"internal error ({e.__class__.__name__}); still watching")
            finally:
                with self._pending_lock:
                    self._pending -= 1

        with self._pending_lock:
            self._pending += 1
        self._actions.submit(run)

    def busy(self) -> bool:
        """A restart, signal or recreate is pending or under way."""
        with self._pending_lock:
            return self._pending > 0

    def close(self) -> None:
        """Wait for the restarts and signals already decided."""
        self._actions.shutdown(wait=True)

    def _compose(self, command: list[str]) -> bool:
        session = self.session
        argv = compose.build_argv(session.project, session.override, command)
        try:
            out = subprocess.run(
                argv, env=dict(session.env), cwd=session.cwd, capture_output=True, check=False
            )
        except OSError as e:
            self.report(f"compose {command[0]} failed: could not run {argv[0]}: {reason(e)}")
            return False
        if out.returncode != 0:
            lines = out.stderr.decode(errors="replace").strip().splitlines()
            self.report(f"compose {command[0]} failed: {lines[-1] if lines else out.returncode}")
        return out.returncode == 0


def service_specs(layout: Layout, blocks: Mapping[str, str]) -> dict[str, str]:
    """Per service, a digest of its secret spec as Swarm sees it (each source, target, uid,
    gid, mode) and of its mounts. When it changes, Swarm rolls out new tasks: we recreate.
    A new value under the same names changes nothing here: it is swapped in place."""
    grants: dict[str, list[tuple[str, str, str, str, int]]] = {name: [] for name in blocks}
    for service in layout.services:
        grants[service.service] = sorted(  # tuples: the same JSON (and digest) as lists
            (f.store_name, f.grant.target, f.grant.uid, f.grant.gid, f.grant.mode)
            for f in service.files
        )
    return {
        name: hashlib.sha256(
            json.dumps([blocks.get(name), specs], sort_keys=True, default=str).encode()
        ).hexdigest()
        for name, specs in grants.items()
    }


def _describe(changed: Mapping[str, set[str]]) -> str:
    """`tls_cert, tls_key changed → nginx; x changed → api, worker`: names grouped by the
    services that see them."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for name, services in sorted(changed.items()):
        groups.setdefault(tuple(sorted(services)), []).append(name)
    return "; ".join(
        f"{', '.join(names)} changed → {', '.join(services)}" for services, names in groups.items()
    )


def redeploy(
    session: Session,
    store: Store,
    identities: Identities,
    cli_policies: Mapping[str, Policy],
    report: Report,
) -> None:
    """A re-run of `up` over a stack that may have changed since the last run, as a re-run
    of `docker stack deploy`: see LiveStack.catch_up. Returns once it is applied."""
    live = LiveStack(session, store, identities, cli_policies, report)
    try:
        live.catch_up()
    finally:
        live.close()


def start_watching(live: LiveStack) -> Watching:
    """Start the observer; returns what stops it."""
    from devsecrets.watch import Watcher

    watcher = Watcher(
        live.directories(),
        live.wanted,
        live.on_batch,
        report=live.report,
        writer_lock=live.store.root / LOCK_FILE,  # a writer done: its changes are due at once
    )
    live.record()  # what runs now: the containers `up` made, or what catch_up applied
    watcher.start()
    live.on_batch(set())  # whatever changed before the observer ran (cheap when nothing did)
    return Watching(watcher, live)


class Watching:
    """What `start_watching` returns: call it to stop; `busy()` while restarts are pending."""

    def __init__(self, watcher: Watcher, live: LiveStack) -> None:
        self.watcher, self.live = watcher, live

    def __call__(self) -> None:
        self.watcher.stop()
        self.live.close()

    def busy(self) -> bool:
        return self.live.busy()
