"""Read the stack the way compose reads it: `docker compose config --format json` -> grants.

Input: compose's resolved config (a dict). Output: `StackModel` with one `Grant` per
(service, secret reference) and one `SecretSource` per top-level secret. Pure: no I/O here.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from devsecrets.errors import DevsecretsError, StackError

SECRETS_DIR = "/run/secrets"
DEFAULT_MODE = 0o444  # Swarm's default and compose's (ARCHITECTURE.md, "Measured facts")
_SERVICE = re.compile(r"[a-zA-Z0-9._-]+")  # the compose spec's pattern for service names
MAX_ID = 2**32 - 2  # uid_t/gid_t are 32-bit; 2**32 - 1 is (uid_t)-1, "no change" to chown


class SourceKind(Enum):
    EXTERNAL = "external"  # created with `docker secret create`: the store provides it
    FILE = "file"  # a plaintext file: the store overrides it when it has the name
    ENVIRONMENT = "environment"  # compose copies it from the environment: left alone
    DRIVER = "driver"  # a secret-driver plugin: like external, Swarm-only


class Action(Enum):
    """What a service does when one of its secrets changes."""

    NONE = "none"
    RESTART = "restart"
    SIGNAL = "signal"


_SIGNAL = re.compile(r"^SIG[A-Z0-9]+$")


@dataclass(frozen=True, slots=True)
class Policy:
    """An on-change policy: nothing, restart, or a signal (`signal` is set only for SIGNAL)."""

    action: Action
    signal: str | None = None

    @classmethod
    def parse(cls, text: str, where: str, error: type[DevsecretsError] = StackError) -> Policy:
        """`none`, `restart` or a signal name; `error` says whose mistake a bad one is."""
        value = text.strip()
        if value.lower() in ("none", "restart"):
            return cls(Action(value.lower()))
        if _SIGNAL.match(value.upper()):
            return cls(Action.SIGNAL, value.upper())
        raise error(
            f"{where}: unknown on-change policy {text!r}",
            hint="use none, restart or a signal such as SIGHUP",
        )


NO_POLICY = Policy(Action.NONE)


@dataclass(frozen=True, slots=True)
class SecretSource:
    key: str  # the compose key services refer to
    kind: SourceKind
    store_name: str  # what `docker secret create` would have been given
    file: str | None = None


@dataclass(frozen=True, slots=True)
class Grant:
    service: str
    source: str
    target: str  # absolute path inside the container
    uid: str
    gid: str
    mode: int


@dataclass(frozen=True, slots=True)
class StackModel:
    project: str
    sources: Mapping[str, SecretSource]
    grants: tuple[Grant, ...]
    raw_service_secrets: Mapping[str, tuple[Mapping[str, Any], ...]]
    service_volume_targets: Mapping[str, frozenset[str]]
    on_change: Mapping[str, Policy] = field(default_factory=dict)  # x-devsecrets: on-change
    # service -> top-level secret keys its `build.secrets` uses (BuildKit secret mounts)
    build_secrets: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


def read_model(config: Mapping[str, Any]) -> StackModel:
    """Turn compose's resolved config into grants; StackError on a shape compose would not
    emit. Words: "config" is compose's JSON; "model" is always our `StackModel`."""
    project = config.get("name")
    if not isinstance(project, str) or not project:
        raise StackError("compose config gave no project name")
    secrets = _mapping(config.get("secrets"), "secrets")
    _refuse_invalid_names(secrets)
    sources = {
        key: _source(key, _mapping(spec, f"secret {key!r}")) for key, spec in secrets.items()
    }
    grants: list[Grant] = []
    raw: dict[str, tuple[Mapping[str, Any], ...]] = {}
    volumes: dict[str, frozenset[str]] = {}
    build: dict[str, tuple[str, ...]] = {}
    for service, spec in sorted(_mapping(config.get("services"), "services").items()):
        if not _SERVICE.fullmatch(service) or service in (".", ".."):
            raise StackError(f"bad service name {service!r}")  # compose's own pattern
        spec = _mapping(spec, f"service {service!r}")
        refs = tuple(_mapping(r, f"service {service!r}: a secret") for r in _list(spec, "secrets"))
        raw[service] = refs
        volumes[service] = frozenset(
            str(v.get("target", "")) for v in _list(spec, "volumes") if isinstance(v, dict)
        )
        if keys := _build_secrets(service, spec, sources):
            build[service] = keys
        service_grants = [_grant(service, ref, sources) for ref in refs]
        _check_targets(service, service_grants)
        grants.extend(service_grants)
    return StackModel(
        project=project,
        sources=sources,
        grants=tuple(grants),
        raw_service_secrets=raw,
        service_volume_targets=volumes,
        on_change=_on_change(config.get("x-devsecrets")),
        build_secrets=build,
    )


def _mapping(raw: Any, what: str) -> Mapping[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(isinstance(k, str) for k in raw):
        raise StackError(f"compose config gave an unexpected shape for {what}")
    return raw


def _list(spec: Mapping[str, Any], key: str) -> list[Any]:
    raw = spec.get(key) or []
    if not isinstance(raw, list):
        raise StackError(f"compose config gave an unexpected shape for {key}")
    return raw


def _build_secrets(
    service: str, spec: Mapping[str, Any], sources: Mapping[str, SecretSource]
) -> tuple[str, ...]:
    """The top-level keys of the service's `build.secrets`, each one declared."""
    build = spec.get("build")
    if not isinstance(build, dict):
        return ()
    keys = []
    for ref in _list(build, "secrets"):
        key = str(_mapping(ref, f"service {service!r}: a build secret").get("source"))
        if key not in sources:
            raise StackError(
                f"service {service!r} builds with secret {key!r}, which is not declared"
            )
        keys.append(key)
    return tuple(dict.fromkeys(keys))


def _check_targets(service: str, grants: list[Grant]) -> None:
    """Two secrets at one path, or one inside the other (`conf` and `conf/inner`), cannot
    both be files: refused here, before anything is written."""
    targets = sorted((g.target, g.source) for g in grants)
    for (outer, a), (inner, b) in zip(targets, targets[1:], strict=False):
        if inner == outer or inner.startswith(outer.rstrip("/") + "/"):
            raise StackError(
                f"service {service!r}: secrets {a!r} and {b!r} clash: "
                f"target {inner} is {'the same as' if inner == outer else 'inside'} {outer}"
            )


def _on_change(extension: Any) -> dict[str, Policy]:
    """`x-devsecrets: {on-change: {api: restart, nginx: SIGHUP}}` (top level: compose drops
    service-level `x-` keys from its resolved config)."""
    if extension in (None, ""):
        return {}
    table = (
        extension.get("on-change", extension.get("on_change"))
        if isinstance(extension, dict)
        else None
    )
    if table is None:
        return {}
    if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
        raise StackError(
            "x-devsecrets.on-change must map service names to none, restart or a signal"
        )
    return {str(k): Policy.parse(v, f"x-devsecrets.on-change.{k}") for k, v in table.items()}


def _source(key: str, spec: Mapping[str, Any]) -> SecretSource:
    name = spec.get("name") or key
    if spec.get("external"):
        return SecretSource(key, SourceKind.EXTERNAL, _store_name(key, name))
    if spec.get("driver"):
        return SecretSource(key, SourceKind.DRIVER, _store_name(key, name))
    if spec.get("environment"):
        return SecretSource(key, SourceKind.ENVIRONMENT, key)
    if spec.get("file"):
        # compose names file secrets <project>_<key>; the store entry is the compose key
        return SecretSource(key, SourceKind.FILE, key, file=spec["file"])
    raise StackError(f"secret {key!r} has no file, environment or external source")


def _refuse_invalid_names(secrets: Mapping[str, Any]) -> None:
    """Every external or driver secret whose name no store entry can have, in one error."""
    from devsecrets.store import _is_valid_name

    bad = [
        (key, str(spec.get("name") or key))
        for key, spec in sorted(secrets.items())
        if isinstance(spec, dict) and (spec.get("external") or spec.get("driver"))
    ]
    bad = [(key, name) for key, name in bad if not _is_valid_name(name)]
    if len(bad) > 1:
        names = ", ".join(f"{key!r} ({name[:80]!r})" for key, name in bad)
        raise StackError(
            f"secrets {names} have names that are not valid secret names; "
            "the store cannot hold them",
            hint="use 1-64 letters, digits, '-', '_' or '.', starting and ending with a "
            "letter or digit (Swarm's rule)",
        )


def _store_name(key: str, name: Any) -> str:
    """An external or driver secret's name, which the store must hold: a name no store entry
    can have (`../recipients`) is refused here, by name, not reported as missing."""
    from devsecrets.errors import UsageProblem
    from devsecrets.store import validate_name

    try:
        return validate_name(str(name))
    except UsageProblem as e:
        raise StackError(
            f"secret {key!r} has name {str(name)[:80]!r}, which is not a valid secret name; "
            "the store cannot hold it",
            hint=e.hint or "choose another name",
        ) from e


def _grant(service: str, ref: Mapping[str, Any], sources: Mapping[str, SecretSource]) -> Grant:
    source = str(ref.get("source"))
    if source not in sources:
        raise StackError(f"service {service!r} uses secret {source!r}, which is not declared")
    target = str(ref.get("target") or source)
    if not target.startswith("/"):
        target = posixpath.join(SECRETS_DIR, target)  # compose and Swarm: relative = /run/secrets/
    target = posixpath.normpath(target)
    if target in ("/", "//", SECRETS_DIR) or "\0" in target:
        raise StackError(f"service {service!r}: secret {source!r} has bad target {target!r}")
    return Grant(
        service=service,
        source=source,
        target=target,
        uid=_id(ref.get("uid"), "uid", service, source),
        gid=_id(ref.get("gid"), "gid", service, source),
        mode=_mode(ref.get("mode"), service, source),
    )


def _id(raw: Any, what: str, service: str, source: str) -> str:
    """A uid or gid as Swarm takes it: a decimal number a 32-bit id can hold."""
    text = "0" if raw is None or raw == "" else str(raw)
    if not re.fullmatch(r"[0-9]{1,10}", text) or int(text) > MAX_ID:
        raise StackError(
            f"service {service!r}: secret {source!r} has {what} {text[:20]!r}; "
            f"Swarm needs a number from 0 to {MAX_ID}"
        )
    return str(int(text))


def _mode(raw: Any, service: str, source: str) -> int:
    if raw is None or raw == "":
        return DEFAULT_MODE
    try:
        # compose's JSON writes modes as octal strings ("0440"); a bare int is already a value
        mode = int(raw, 8) if isinstance(raw, str) else int(raw)
    except (ValueError, TypeError, OverflowError) as e:
        raise StackError(f"service {service!r}: secret {source!r} has bad mode {raw!r}") from e
    if not 0 <= mode <= 0o777:
        raise StackError(
            f"service {service!r}: secret {source!r} has mode {oct(mode)} out of range"
        )
    return mode
