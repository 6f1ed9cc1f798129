"""Every call to a Swarm goes through here: secrets, `docker stack`, services and tasks.

Input: the environment (DOCKER_HOST, DOCKER_CONTEXT, PATH) and names. Output: typed views of
what the engine reports (`deploy.SwarmSecret`, `deploy.ServiceState`). A secret value reaches
the engine only on `docker secret create`'s stdin: never in argv, the environment or a file.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from devsecrets.errors import DevsecretsError

TIMEOUT = 120
STACK_LABEL = "com.docker.stack.namespace"  # set by docker stack deploy
LABEL_MANAGER = "devsecrets.manager"
LABEL_NAME = "devsecrets.name"
LABEL_HASH = "devsecrets.hash"
MANAGER = "devsecrets"


class DeployError(DevsecretsError):
    pass


@dataclass(frozen=True, slots=True)
class SwarmSecret:
    name: str
    created: str  # the engine's RFC 3339 CreatedAt: sorts by time
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def managed(self) -> bool:
        return self.labels.get(LABEL_MANAGER) == MANAGER

    @property
    def logical(self) -> str | None:
        return self.labels.get(LABEL_NAME) if self.managed else None

    @property
    def digest(self) -> str | None:
        return self.labels.get(LABEL_HASH) if self.managed else None


@dataclass(frozen=True, slots=True)
class ServiceState:
    name: str
    update_state: str | None  # UpdateStatus.State, None when the service never updated
    replicas: int | None  # None for a global service
    secrets: frozenset[str]  # secret object names in the service's spec
    tasks: tuple[tuple[str, frozenset[str]], ...]  # desired-running tasks: (state, secrets)


@dataclass(frozen=True, slots=True)
class Target:
    """Which engine a deploy would change, in the words `docker context` uses."""

    context: str
    endpoint: str
    docker_host: str | None
    node: str
    swarm_state: str
    manager: bool

    def describe(self) -> str:
        where = (
            f"DOCKER_HOST={self.docker_host}"
            if self.docker_host
            else f"context {self.context} ({self.endpoint})"
        )
        return f"{where}, node {self.node}"


def _docker(
    args: Sequence[str], env: Mapping[str, str], *, input: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    try:
        if input is None:  # never hand docker our own stdin
            return subprocess.run(
                ["docker", *args],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                env=dict(env),
                timeout=TIMEOUT,
            )
        return subprocess.run(
            ["docker", *args], input=input, capture_output=True, env=dict(env), timeout=TIMEOUT
        )
    except OSError as e:
        raise DeployError(f"could not run docker: {e.strerror}") from e
    except subprocess.TimeoutExpired as e:
        raise DeployError(f"docker {args[0]} {args[1]} did not answer in {TIMEOUT} s") from e


def _err(out: subprocess.CompletedProcess[bytes]) -> str:
    lines = [ln.strip() for ln in out.stderr.decode(errors="replace").splitlines() if ln.strip()]
    return lines[-1] if lines else f"exit {out.returncode}"


def _json(out: subprocess.CompletedProcess[bytes], what: str) -> Any:
    if out.returncode != 0:
        raise DeployError(f"{what} failed: {_err(out)}")
    try:
        return json.loads(out.stdout or b"null")
    except json.JSONDecodeError as e:
        raise DeployError(f"{what} printed no JSON") from e


def target(env: Mapping[str, str]) -> Target:
    """The engine and its swarm role; DeployError when it is not a swarm manager."""
    info = _json(
        _docker(["info", "--format", "{{json .}}"], env), "docker info (is the engine up?)"
    )
    context = _docker(["context", "show"], env).stdout.decode().strip() or "default"
    endpoint = _docker(
        ["context", "inspect", "--format", "{{.Endpoints.docker.Host}}"], env
    ).stdout.decode()
    swarm = info.get("Swarm") or {}
    found = Target(
        context=context,
        endpoint=endpoint.strip() or "?",
        docker_host=env.get("DOCKER_HOST") or None,
        node=str(info.get("Name") or "?"),
        swarm_state=str(swarm.get("LocalNodeState") or "inactive"),
        manager=bool(swarm.get("ControlAvailable")),
    )
    if found.swarm_state != "active" or not found.manager:
        raise DeployError(
            f"the engine at {found.describe()} is not a swarm manager (swarm: {found.swarm_state})",
            hint="point DOCKER_HOST or `docker context use` at a manager, or run "
            "`docker swarm init` there",
        )
    return found


def list_secrets(env: Mapping[str, str]) -> list[SwarmSecret]:
    ids = _docker(["secret", "ls", "-q"], env)
    if ids.returncode != 0:
        raise DeployError(f"docker secret ls failed: {_err(ids)}")
    if not ids.stdout.split():
        return []
    found = _json(
        _docker(["secret", "inspect", *ids.stdout.decode().split()], env), "docker secret inspect"
    )
    return [
        SwarmSecret(
            name=s["Spec"]["Name"],
            created=s.get("CreatedAt", ""),
            labels=s["Spec"].get("Labels") or {},
        )
        for s in found
    ]


def create_secret(
    name: str, labels: Mapping[str, str], value: bytes, env: Mapping[str, str]
) -> None:
    """`docker secret create --label … NAME -`: the value on stdin only."""
    flags = [f for k, v in sorted(labels.items()) for f in ("--label", f"{k}={v}")]
    out = _docker(["secret", "create", *flags, name, "-"], env, input=value)
    if out.returncode != 0:
        raise DeployError(f"could not create secret {name}: {_err(out)}")


def remove_secret(name: str, env: Mapping[str, str]) -> str | None:
    """None when removed, else the engine's reason (e.g. still in use)."""
    out = _docker(["secret", "rm", name], env)
    return None if out.returncode == 0 else _err(out)


def _services(filters: Sequence[str], env: Mapping[str, str]) -> list[dict[str, Any]]:
    ids = _docker(["service", "ls", "-q", *filters], env)
    if ids.returncode != 0:
        raise DeployError(f"docker service ls failed: {_err(ids)}")
    if not ids.stdout.split():
        return []
    found: list[dict[str, Any]] = _json(
        _docker(["service", "inspect", *ids.stdout.decode().split()], env),
        "docker service inspect",
    )
    return found


def _secret_names(spec: Mapping[str, Any]) -> frozenset[str]:
    refs = (spec.get("ContainerSpec") or {}).get("Secrets") or []
    return frozenset(r.get("SecretName", "") for r in refs)


def secrets_in_use(env: Mapping[str, str], *, except_stack: str | None = None) -> set[str]:
    """Secret names the swarm's services refer to (any stack, not only ours), leaving out
    those of `except_stack`, whose references a deploy is about to replace."""
    used: set[str] = set()
    for service in _services([], env):
        labels = service["Spec"].get("Labels") or {}
        if except_stack is not None and labels.get(STACK_LABEL) == except_stack:
            continue
        used |= _secret_names(service["Spec"].get("TaskTemplate") or {})
    return used


def stack_state(stack: str, env: Mapping[str, str]) -> list[ServiceState]:
    """Each of the stack's services: update state, replicas, spec secrets, running tasks."""
    services = _services(["--filter", f"label={STACK_LABEL}={stack}"], env)
    tasks = _docker(
        ["stack", "ps", "-q", "--no-trunc", "--filter", "desired-state=running", stack], env
    )
    task_ids = tasks.stdout.decode().split() if tasks.returncode == 0 else []
    by_service: dict[str, list[tuple[str, frozenset[str]]]] = {}
    if task_ids:
        for task in _json(
            _docker(["inspect", "--type", "task", *task_ids], env), "docker inspect (tasks)"
        ):
            state = (task.get("Status") or {}).get("State", "")
            by_service.setdefault(task.get("ServiceID", ""), []).append(
                (state, _secret_names(task.get("Spec") or {}))
            )
    states = []
    for s in services:
        mode = s["Spec"].get("Mode") or {}
        replicated = mode.get("Replicated")
        states.append(
            ServiceState(
                name=s["Spec"]["Name"],
                update_state=(s.get("UpdateStatus") or {}).get("State"),
                replicas=int(replicated.get("Replicas", 1)) if replicated is not None else None,
                secrets=_secret_names(s["Spec"].get("TaskTemplate") or {}),
                tasks=tuple(by_service.get(s["ID"], ())),
            )
        )
    return states


def _stack_argv(files: Sequence[str]) -> list[str]:
    return [f for path in files for f in ("-c", path)] + ["-c", "-"]


def stack_config(files: Sequence[str], override: str, env: Mapping[str, str], cwd: str) -> None:
    """`docker stack config` checks the merged stack client-side, before anything changes."""
    out = subprocess.run(
        ["docker", "stack", "config", *_stack_argv(files)],
        input=override.encode(),
        capture_output=True,
        env=dict(env),
        cwd=cwd,
        timeout=TIMEOUT,
    )
    if out.returncode != 0:
        if b"unknown command" in out.stderr or b"is not a docker command" in out.stderr:
            return  # a docker CLI older than 22.06: stack deploy will check it
        raise DeployError(f"docker stack deploy would refuse the stack: {_err(out)}")


def stack_deploy(
    files: Sequence[str],
    override: str,
    stack: str,
    extra: Sequence[str],
    env: Mapping[str, str],
    cwd: str,
) -> int:
    """`docker stack deploy -c FILE… -c - [extra] STACK`, our names-only file on stdin; the
    CLI's own output goes to the user's terminal."""
    try:
        return subprocess.run(
            ["docker", "stack", "deploy", *_stack_argv(files), *extra, stack],
            input=override.encode(),
            env=dict(env),
            cwd=cwd,
            check=False,
        ).returncode
    except OSError as e:
        raise DeployError(f"could not run docker: {e.strerror}") from e
