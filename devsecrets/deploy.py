"""Deploy a stack to a real Swarm with versioned secrets: the plan (pure) and its application.

Input: the stack's model (`StackModel`, from `docker compose config`), the store's values,
the swarm's secret objects. Output: a `Plan` (create / reuse / prune, names and hashes only)
and, when applied, a `Deployed` report. Values go to the engine on stdin only (see swarm.py);
this module never prints, never writes a value anywhere, and never changes the user's files.

Rotation is Swarm's own recipe, done for you: a secret object is immutable, so each value gets
its own object named after the logical name plus a keyed hash of the value; the stack is
deployed with each logical secret pointed at that name (`external: true`, `name:`), Swarm's
rolling update moves the services over, and unused versions are removed once they converged.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from devsecrets import compose, swarm
from devsecrets.errors import StackError, UsageProblem
from devsecrets.needs import Needs, needs
from devsecrets.stack import SourceKind, StackModel, read_model
from devsecrets.swarm import DeployError, ServiceState, SwarmSecret

if TYPE_CHECKING:
    from devsecrets.keys import Identities
    from devsecrets.store import Store

# The store entry holding the hash key (32 random bytes, encrypted like every value), so the
# hashes on the cluster can only be recomputed by the store's recipients (ARCHITECTURE.md).
DEPLOY_KEY = "devsecrets-deploy-key"
SHORT_HASH = 12
MAX_NAME = 64  # Swarm's limit on an object name
MAX_SIZE = 500 * 1024 - 1  # swarmkit: 0 < len(data) < 512000 bytes
# Service keys `docker stack deploy` ignores (or only warns about); compose honours them.
SWARM_IGNORES = {
    "build": "images are not built by Swarm",
    "container_name": "Swarm names the tasks",
    "depends_on": "Swarm starts services in no order",
    "restart": "Swarm uses deploy.restart_policy",
    "network_mode": "use networks",
    "privileged": "",
    "devices": "",
    "cgroup_parent": "",
    "links": "",
    "external_links": "",
    "security_opt": "",
    "shm_size": "",
    "ipc": "",
    "pid": "",
    "userns_mode": "",
    "profiles": "every service in the stack file is deployed",
    "pull_policy": "",
    "develop": "",
}


@dataclass(frozen=True, slots=True)
class Wanted:
    """One store-backed secret the stack uses, at its current value."""

    key: str  # the stack's key for it (what services refer to)
    logical: str  # the store name
    digest: str  # hex HMAC-SHA256 of (logical, value) under the deploy key

    @property
    def name(self) -> str:
        return versioned_name(self.logical, self.digest)


@dataclass(frozen=True, slots=True)
class Plan:
    create: tuple[Wanted, ...]
    reuse: tuple[Wanted, ...]
    prune: tuple[SwarmSecret, ...]  # after convergence (a deploy) or now (--prune-only)
    keep: tuple[SwarmSecret, ...]  # unused, but kept by --keep
    left: tuple[str, ...]  # lines: what `docker stack deploy` handles itself
    warnings: tuple[str, ...] = ()

    @property
    def wanted(self) -> tuple[Wanted, ...]:
        return tuple(sorted(self.create + self.reuse, key=lambda w: w.key))


# -- the plan (pure) ---------------------------------------------------------------------------


def secret_hash(key: bytes, logical: str, value: bytes) -> str:
    """Keyed, so a label cannot be checked against guesses of a low-entropy value; over the
    name too, so two secrets with the same value do not show as equal on the cluster."""
    return hmac.new(key, logical.encode() + b"\0" + value, hashlib.sha256).hexdigest()


def versioned_name(logical: str, digest: str) -> str:
    """`<logical>_<12 hex>`, within Swarm's 64 characters: the logical part is cut, never
    the hash. Starts like the logical name and ends with a hex digit, as Swarm requires."""
    short = digest[:SHORT_HASH]
    room = MAX_NAME - len(short) - 1
    return f"{logical[:room]}_{short}"


@dataclass(frozen=True, slots=True)
class StackSecrets:
    managed: Mapping[str, str]  # stack key -> store name: devsecrets creates these
    left: tuple[str, ...]
    warnings: tuple[str, ...]


def stack_secrets(need: Needs) -> StackSecrets:
    """Which of the stack's secrets come from the store; the rest are stack deploy's.

    Swarm's rules over the secrets `needs` found: an `external:` secret the store holds is
    devsecrets'; one it does not hold must exist on the swarm; a driver secret is the
    driver's; a `file:` secret is the file's (Swarm reads it, not the store); an
    `environment:` secret is refused, as `docker stack deploy` would."""
    managed: dict[str, str] = {}
    left: list[str] = []
    warnings: list[str] = []
    for secret in need.secrets:
        key = secret.key
        if secret.kind is SourceKind.EXTERNAL and secret.in_store:
            managed[key] = secret.store_name
        elif secret.kind is SourceKind.EXTERNAL:
            left.append(f"{key}: external {secret.store_name}, not in the store: must exist")
        elif secret.kind is SourceKind.DRIVER:
            left.append(f"{key}: from its secret driver")
        elif secret.kind is SourceKind.FILE:
            left.append(f"{key}: from file {secret.file}")
            if secret.in_store and secret.file and not os.path.lexists(secret.file):
                warnings.append(
                    f"secret {key} is stored, but the stack still declares it `file: "
                    f"{secret.file}`, which does not exist (imported and deleted?): the deploy "
                    "would fail; declare it `external: true` to deploy the store's value"
                )
            elif secret.in_store:
                warnings.append(
                    f"secret {key} comes from file {secret.file} in the stack: the swarm gets "
                    f"that file, not the store's value (declare it `external: true` instead)"
                )
        else:
            raise DeployError(
                f"secret {key} comes from the environment, which docker stack deploy "
                "does not support",
                hint=f"store it with `devsecrets set {secret.store_name}` and declare it "
                "`external: true`",
            )
    return StackSecrets(managed, tuple(left), tuple(warnings))


def check_value(logical: str, value: bytes) -> None:
    if not 0 < len(value) <= MAX_SIZE:
        raise DeployError(
            f"secret {logical} is {len(value)} bytes; Swarm takes 1 to {MAX_SIZE} bytes",
            hint=f"change it with `devsecrets set {logical}`",
        )


def ignored_keys(services: Mapping[str, Any]) -> list[str]:
    """One warning per service that uses keys `docker stack deploy` ignores."""
    warnings = []
    for service, spec in sorted(services.items()):
        found = sorted(k for k in SWARM_IGNORES if isinstance(spec, dict) and k in spec)
        if found:
            why = "; ".join(f"{k}: {SWARM_IGNORES[k]}" for k in found if SWARM_IGNORES[k])
            warnings.append(
                f"service {service}: docker stack deploy ignores {', '.join(found)}"
                + (f" ({why})" if why else "")
            )
    return warnings


def plan(
    wanted: Sequence[Wanted],
    existing: Sequence[SwarmSecret],
    in_use: Collection[str],
    keep: int,
    *,
    logicals: Collection[str] | None = None,
    left: Sequence[str] = (),
    warnings: Sequence[str] = (),
) -> Plan:
    """Create what the swarm lacks, reuse what it has, prune the unused versions of the
    stack's logical secrets beyond the `keep` newest. `logicals` defaults to the wanted ones."""
    by_name = {s.name: s for s in existing}
    create: list[Wanted] = []
    reuse: list[Wanted] = []
    for want in sorted(wanted, key=lambda w: w.key):
        found = by_name.get(want.name)
        if found is None:
            if want.name not in {w.name for w in create}:
                create.append(want)
            else:
                reuse.append(want)  # two stack keys for one store secret: one object
        elif found.logical == want.logical and found.digest == want.digest:
            reuse.append(want)
        else:
            raise DeployError(
                f"the swarm already has a secret {want.name} that devsecrets did not create "
                f"for {want.logical}",
                hint=f"remove or rename it: `docker secret rm {want.name}`",
            )
    names = logicals if logicals is not None else {w.logical for w in wanted}
    current = {w.name for w in wanted}
    prune: list[SwarmSecret] = []
    kept: list[SwarmSecret] = []
    for logical in sorted(names):
        unused = sorted(
            (
                s
                for s in existing
                if s.logical == logical and s.name not in current and s.name not in in_use
            ),
            key=lambda s: (s.created, s.name),
            reverse=True,
        )
        kept += unused[:keep]
        prune += unused[keep:]
    return Plan(
        tuple(create), tuple(reuse), tuple(prune), tuple(kept), tuple(left), tuple(warnings)
    )


def render_override(version: str | None, names: Mapping[str, str]) -> str:
    """The stack file passed last to `docker stack deploy`: each logical secret pointed at its
    versioned object. docker/cli merges top-level secrets per key, and refuses files whose
    `version` differs, so it carries the user's. Names only, never values."""
    doc: dict[str, Any] = {} if version is None else {"version": version}
    doc["secrets"] = {key: {"external": True, "name": name} for key, name in sorted(names.items())}
    return "# rendered by devsecrets deploy: names only\n" + yaml.safe_dump(doc, sort_keys=False)


def stack_version(first_file: Mapping[str, Any] | None) -> str | None:
    raw = (first_file or {}).get("version")
    return None if raw is None else str(raw)


def check_stack_name(stack: str) -> str:
    # docker/cli validates stack names: lowercase is not required, but no '_' prefix issues
    if not stack or stack.startswith("-") or any(c in stack for c in " /:"):
        raise UsageProblem(f"invalid stack name {stack!r}")
    return stack


# -- convergence (pure decision over what the engine reports) ----------------------------------


FAILED_UPDATES = frozenset({"paused", "rollback_started", "rollback_paused", "rollback_completed"})


def rollout(services: Sequence[ServiceState]) -> tuple[bool, list[str]]:
    """(done, failures): done when every service runs its spec's secrets on enough tasks."""
    failures = []
    done = True
    for s in services:
        if s.update_state in FAILED_UPDATES:
            failures.append(f"{s.name}: update {s.update_state.replace('_', ' ')}")
            continue
        current = [t for t in s.tasks if t[0] == "running" and t[1] == s.secrets]
        enough = len(current) >= (s.replicas if s.replicas is not None else 1)
        if s.update_state == "updating" or not enough or len(current) != len(s.tasks):
            done = False
    return done and not failures, failures


# -- carrying it out (side effects through swarm.py) ---------------------------------------------


@dataclass(slots=True)
class Deployed:
    plan: Plan
    target: swarm.Target
    created: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
    not_pruned: list[str] = field(default_factory=list)  # still in use or refused


Clock = Callable[[], float]
Sleep = Callable[[float], None]


def wait_for_rollout(
    read: Callable[[], Sequence[ServiceState]],
    timeout: float,
    clock: Clock = time.monotonic,
    sleep: Sleep = time.sleep,
    interval: float = 1.0,
) -> None:
    """Poll until every service converged; DeployError on a failed update or the timeout."""
    deadline = clock() + timeout
    while True:
        done, failures = rollout(read())
        if failures:
            raise DeployError(f"the rollout failed: {'; '.join(failures)}")
        if done:
            return
        if clock() >= deadline:
            raise DeployError(f"the services did not converge within {timeout:g} s")
        sleep(interval)


@dataclass(frozen=True, slots=True)
class DeployOptions:
    files: tuple[str, ...]  # the user's stack files, as given to `docker stack deploy -c`
    stack: str
    extra: tuple[str, ...] = ()  # other `docker stack deploy` flags, passed through
    keep: int = 0
    dry_run: bool = False
    prune_only: bool = False
    timeout: float = 300.0


Confirm = Callable[[swarm.Target, Plan], bool]


def deploy(
    options: DeployOptions,
    cwd: Path,
    env: Mapping[str, str],
    store_factory: Callable[[], Store],
    identities_factory: Callable[[], Identities],
    *,
    confirm: Confirm,
    warn: Callable[[str], None],
) -> Deployed:
    """Plan, and unless dry-run: confirm, create the new versions, `docker stack deploy`,
    wait for the rollout, prune. On any failure the new, unused versions are removed again and
    the old ones stay, so the running services keep what they had."""
    check_stack_name(options.stack)
    model, services = _read_stack(options.files, cwd, env)
    store = store_factory()
    names = set(store.names())
    found = stack_secrets(needs(model, names))
    warnings = [*found.warnings, *ignored_keys(services)]
    dotenv = _path(options.files[0], cwd).parent / ".env"
    if dotenv.is_file():
        warnings.append(
            f"docker stack deploy does not read {dotenv} (compose does): export the variables "
            "the stack files use"
        )
    for line in warnings:
        warn(line)
    where = swarm.target(env)
    existing = swarm.list_secrets(env)
    # what stays in use once this stack runs the new versions: the rest of the swarm's
    in_use = swarm.secrets_in_use(env, except_stack=None if options.prune_only else options.stack)
    if options.prune_only:
        todo = plan(
            (),
            existing,
            in_use,
            options.keep,
            logicals=set(found.managed.values()),
            left=found.left,
            warnings=warnings,
        )
        result = Deployed(todo, where)
        if not options.dry_run and todo.prune:
            if not confirm(where, todo):
                raise DeployError("nothing changed")
            _prune(todo.prune, env, result)
        return result
    identities = identities_factory()
    key, new_key = _deploy_key(store, identities, names)
    if new_key:
        warnings.append(
            f"no {DEPLOY_KEY} in the store yet: this deploy creates it (commit it, so that "
            "every member's deploy names the same value the same way)"
        )
        warn(warnings[-1])
    values: dict[str, bytes] = {}
    wanted = []
    for stack_key, logical in sorted(found.managed.items()):
        if logical not in values:
            values[logical] = store.read(logical, identities).value
            check_value(logical, values[logical])
        wanted.append(Wanted(stack_key, logical, secret_hash(key, logical, values[logical])))
    todo = plan(wanted, existing, in_use, options.keep, left=found.left, warnings=warnings)
    override = render_override(
        stack_version(_first_file(options.files, cwd)), {w.key: w.name for w in wanted}
    )
    swarm.stack_config(options.files, override, env, str(cwd))  # before anything changes
    result = Deployed(todo, where)
    if options.dry_run:
        return result
    if not confirm(where, todo):
        raise DeployError("nothing changed")
    if new_key:
        store.write(DEPLOY_KEY, key, identities)
    try:
        for want in todo.create:
            swarm.create_secret(want.name, _labels(want), values[want.logical], env)
            result.created.append(want.name)
        code = swarm.stack_deploy(
            options.files, override, options.stack, options.extra, env, str(cwd)
        )
        if code != 0:
            raise DeployError(f"docker stack deploy failed (exit {code})")
        wait_for_rollout(lambda: swarm.stack_state(options.stack, env), options.timeout)
    except BaseException as e:
        _undo(result, env)
        if not isinstance(e, DeployError):
            raise
        undone = ", ".join(result.pruned) or "none"
        kept = ", ".join(result.not_pruned)
        raise DeployError(
            f"{e.message}; the previous secret versions are kept",
            hint=f"new versions removed again: {undone}"
            + (f"; still in use, left in place: {kept}" if kept else "")
            + f"; see `docker stack ps {options.stack}`",
        ) from e
    after = plan(wanted, swarm.list_secrets(env), swarm.secrets_in_use(env), options.keep)
    result.plan = Plan(todo.create, todo.reuse, after.prune, after.keep, todo.left, todo.warnings)
    _prune(after.prune, env, result)
    return result


def _read_stack(
    files: Sequence[str], cwd: Path, env: Mapping[str, str]
) -> tuple[StackModel, Mapping[str, Any]]:
    """The stack as compose resolves it (the one reader of stack files in devsecrets)."""
    found = compose.find_compose(env)
    project = compose.resolve_project(found, compose.ComposeOptions(files=tuple(files)), cwd, env)
    config = compose.load_config(project, env, cwd)
    return read_model(config), config.get("services") or {}


def _path(file: str, cwd: Path) -> Path:
    return Path(file) if Path(file).is_absolute() else cwd / file


def _first_file(files: Sequence[str], cwd: Path) -> Mapping[str, Any] | None:
    path = _path(files[0], cwd)
    try:
        loaded = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise StackError(f"cannot read {path} as a stack file for docker stack deploy") from e
    return loaded if isinstance(loaded, dict) else None


def _deploy_key(store: Store, identities: Identities, names: Collection[str]) -> tuple[bytes, bool]:
    """The store's hash key, or a fresh one to be stored once the user confirmed."""
    if DEPLOY_KEY in names:
        key: bytes = store.read(DEPLOY_KEY, identities).value
        if len(key) >= 16:
            return key, False
        raise DeployError(f"{DEPLOY_KEY} in the store is too short to be a key")
    return secrets.token_bytes(32), True


def _labels(want: Wanted) -> dict[str, str]:
    return {
        swarm.LABEL_MANAGER: swarm.MANAGER,
        swarm.LABEL_NAME: want.logical,
        swarm.LABEL_HASH: want.digest,
    }


def _prune(victims: Sequence[SwarmSecret], env: Mapping[str, str], result: Deployed) -> None:
    for secret in victims:
        refused = swarm.remove_secret(secret.name, env)
        (result.not_pruned if refused else result.pruned).append(secret.name)


def _undo(result: Deployed, env: Mapping[str, str]) -> None:
    """Remove the versions this run created; Swarm refuses those a service already uses."""
    for name in result.created:
        refused = swarm.remove_secret(name, env)
        (result.not_pruned if refused else result.pruned).append(name)
