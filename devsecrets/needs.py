"""What a stack needs from the store: the step every command that reads a stack starts with.

Input: `StackModel` and the names the store holds. Output: `Needs`: one `Need` per secret the
stack grants (its kind, store name, services, whether the store holds it), which compose keys
the store provides (and under which store name), the grants that use them, and structured
`Finding`s (a kind, the secret, the services, a message, a hint). Pure: no I/O, no host paths.
`up`, `watch`, `render` and `run` use `provided` (the layout puts it on tmpfs); `check`
reports the findings; `deploy` reads the `Need`s with Swarm's rules (deploy.stack_secrets).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

from devsecrets.errors import MissingSecretsError
from devsecrets.stack import Grant, SourceKind, StackModel
from devsecrets.suggest import closest


class FindingKind(Enum):
    """A closed set, so `check` and `deploy` can report and filter by kind."""

    MISSING = "missing"  # the stack needs a secret the store does not hold (an error)
    PLAINTEXT_FILE = "plaintext-file"  # a `file:` secret the store does not override
    # compose cannot copy an `environment:` secret under our read-only /run/secrets
    ENVIRONMENT_SECRET = "environment-secret"  # noqa: S105 - a kind's name, not a password
    VOLUME_HIDES_SECRETS = "volume-hides-secrets"  # a volume mounted over the secrets

    @property
    def is_error(self) -> bool:
        return self is FindingKind.MISSING


@dataclass(frozen=True, slots=True)
class Finding:
    kind: FindingKind
    secret: str  # the store name (MISSING) or the compose key
    services: tuple[str, ...]
    message: str  # one line, names only, never a value
    hint: str | None = None  # what to do about it
    near: str | None = None  # MISSING: a store name this one is a near miss of (a typo?)

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True, slots=True)
class Need:
    """One secret some service of the stack is granted, as the stack file declares it."""

    key: str  # the compose key services refer to
    kind: SourceKind
    store_name: str  # the name a store entry would have
    services: tuple[str, ...]  # sorted, each once
    in_store: bool  # the store holds `store_name`
    file: str | None = None  # the plaintext file of a `file:` secret


@dataclass(frozen=True, slots=True)
class Needs:
    project: str
    secrets: tuple[Need, ...]  # every granted secret, by compose key
    provided: Mapping[str, str]  # compose key -> store name, for every key the store provides
    grants: tuple[Grant, ...]  # the grants of provided keys, in the stack's order
    findings: tuple[Finding, ...]
    referenced: frozenset[str]  # store names the stack file declares (granted or not)
    # build time (`build.secrets`), by the same rules; services are the ones whose build
    # uses it. A missing one is an error only for a build: an image already built needs none
    build: tuple[Need, ...] = ()
    build_provided: Mapping[str, str] = field(default_factory=dict)  # key -> store name (held)
    build_missing: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def store_names(self) -> frozenset[str]:
        """The store entries the stack reads (missing ones excluded)."""
        return frozenset(
            n.store_name for n in self.secrets if n.key in self.provided and n.in_store
        )

    @property
    def missing(self) -> dict[str, tuple[str, ...]]:
        """Store name -> the services that need it, for the secrets the store lacks."""
        return {f.secret: f.services for f in self.findings if f.kind is FindingKind.MISSING}

    @property
    def warnings(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if not f.kind.is_error)


def needs(model: StackModel, in_store: Collection[str]) -> Needs:
    """Which secrets the store provides to this stack, and what is wrong or worth saying.

    Host mode's rules: an `external:` or driver secret must come from the store (MISSING when
    it does not hold it); a `file:` secret comes from the store when it holds that name, else
    from its plaintext file (PLAINTEXT_FILE); an `environment:` secret is compose's."""
    users: dict[str, set[str]] = {}
    for grant in model.grants:
        users.setdefault(grant.source, set()).add(grant.service)
    secrets = _needs(model, users, in_store)
    provided, missing = _provided(secrets)
    builders: dict[str, set[str]] = {}
    for service, keys in model.build_secrets.items():
        for key in keys:
            builders.setdefault(key, set()).add(service)
    build = _needs(model, builders, in_store)
    build_rules, build_missing = _provided(build)
    # a build without a secret fails only if it runs: what the store lacks is left out
    build_provided = {n.key: n.store_name for n in build if n.key in build_rules and n.in_store}
    findings: list[Finding] = []
    for need in secrets:
        if need.kind is SourceKind.FILE and not need.in_store:
            findings.append(
                Finding(
                    FindingKind.PLAINTEXT_FILE,
                    need.key,
                    need.services,
                    f"secret {need.key} comes from plaintext file {need.file}; "
                    f"store it with `devsecrets set {need.key} --from-file {need.file}`",
                )
            )
    known = sorted(in_store)
    for name, services in missing.items():
        typo = closest(name, known)
        findings.append(
            Finding(
                FindingKind.MISSING,
                name,
                services,
                f"the store lacks secret {name} (needed by {', '.join(services)})",
                f"did you mean {typo!r}? (a typo in the stack file?)"
                if typo
                else f"add it: `devsecrets set {name}`",
                near=typo,
            )
        )
    return Needs(
        project=model.project,
        secrets=secrets,
        provided=provided,
        grants=tuple(g for g in model.grants if g.source in provided),
        findings=tuple(findings),
        referenced=frozenset(
            s.store_name for s in model.sources.values() if s.kind is not SourceKind.ENVIRONMENT
        ),
        build=build,
        build_provided=build_provided,
        build_missing=build_missing,
    )


def _needs(
    model: StackModel, users: Mapping[str, set[str]], in_store: Collection[str]
) -> tuple[Need, ...]:
    """One `Need` per key some service uses (`users`: key -> those services), by key."""
    found = []
    for key in sorted(users):
        source = model.sources[key]
        found.append(
            Need(
                key,
                source.kind,
                source.store_name,
                tuple(sorted(users[key])),
                source.store_name in in_store,
                source.file,
            )
        )
    return tuple(found)


def _provided(
    secrets: Sequence[Need],
) -> tuple[dict[str, str], dict[str, tuple[str, ...]]]:
    """The rules, for running services and builds alike: an `external:` or driver secret
    comes from the store (missing when it lacks it), a `file:` one when the store holds its
    name, an `environment:` one never. (key -> store name, store name -> services missing it)"""
    provided: dict[str, str] = {}
    missing: dict[str, set[str]] = {}
    for need in secrets:
        if need.kind in (SourceKind.EXTERNAL, SourceKind.DRIVER):
            provided[need.key] = need.store_name
            if not need.in_store:
                missing.setdefault(need.store_name, set()).update(need.services)
        elif need.kind is SourceKind.FILE and need.in_store:
            provided[need.key] = need.store_name
    return provided, {name: tuple(sorted(s)) for name, s in sorted(missing.items())}


def missing_error(
    missing: Mapping[str, tuple[str, ...]], known: Collection[str]
) -> MissingSecretsError:
    """The one error for secrets the store lacks (up, watch, render, run, build: store name ->
    the services that need it), with a did-you-mean for each near miss of a known name."""
    names = ", ".join(f"{n} ({', '.join(s)})" for n, s in missing.items())
    commands = "; ".join(f"devsecrets set {n}" for n in missing)
    candidates = sorted(known)
    typos = [f"{n}: did you mean {m!r}?" for n in missing if (m := closest(n, candidates))]
    hint = f"{'; '.join(typos)} (a typo in the stack file?)" if typos else None
    return MissingSecretsError(
        f"the stack needs {len(missing)} secret(s) the store lacks: {names}",
        hint=hint or f"add them: {commands}",
    )
