"""What a stack needs from the store: the step every command that runs a stack starts with.

Input: `StackModel` and the names the store holds. Output: `Needs`: which compose keys the
store provides (and under which store name), the grants that use them, and structured
`Finding`s (a kind, the secret, the services, a message). Pure: no I/O, no host paths.
`up`, `watch` and `render` lay the result out on tmpfs; `deploy` and `check` use it as is.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
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

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True, slots=True)
class Needs:
    project: str
    provided: Mapping[str, str]  # compose key -> store name, for every key the store provides
    grants: tuple[Grant, ...]  # the grants of provided keys, in the stack's order
    findings: tuple[Finding, ...]

    def store_names(self) -> frozenset[str]:
        """The store entries the stack reads (missing ones excluded)."""
        missing = {f.secret for f in self.findings if f.kind is FindingKind.MISSING}
        return frozenset(self.provided.values()) - missing

    @property
    def missing(self) -> dict[str, tuple[str, ...]]:
        """Store name -> the services that need it, for the secrets the store lacks."""
        return {f.secret: f.services for f in self.findings if f.kind is FindingKind.MISSING}

    @property
    def warnings(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if not f.kind.is_error)


def needs(model: StackModel, in_store: Collection[str]) -> Needs:
    """Which secrets the store provides to this stack, and what is wrong or worth saying."""
    provided: dict[str, str] = {}
    findings: list[Finding] = []
    missing: dict[str, set[str]] = {}
    users: dict[str, list[str]] = {}
    for grant in model.grants:
        users.setdefault(grant.source, []).append(grant.service)
    for key in sorted(users):
        source = model.sources[key]
        if source.kind in (SourceKind.EXTERNAL, SourceKind.DRIVER):
            provided[key] = source.store_name
            if source.store_name not in in_store:
                missing.setdefault(source.store_name, set()).update(users[key])
        elif source.kind is SourceKind.FILE:
            if source.store_name in in_store:
                provided[key] = source.store_name
            else:
                findings.append(
                    Finding(
                        FindingKind.PLAINTEXT_FILE,
                        key,
                        tuple(sorted(set(users[key]))),
                        f"secret {key} comes from plaintext file {source.file}; "
                        f"store it with `devsecrets set {key} --from-file {source.file}`",
                    )
                )
    for name, services in sorted(missing.items()):
        findings.append(
            Finding(
                FindingKind.MISSING,
                name,
                tuple(sorted(services)),
                f"the store lacks secret {name} (needed by {', '.join(sorted(services))})",
            )
        )
    return Needs(
        project=model.project,
        provided=provided,
        grants=tuple(g for g in model.grants if g.source in provided),
        findings=tuple(findings),
    )


def missing_error(
    missing: Mapping[str, tuple[str, ...]], known: Sequence[str]
) -> MissingSecretsError:
    """The one error for secrets the store lacks (up, watch, deploy), with a did-you-mean
    when a name is a near miss of one the store holds."""
    names = ", ".join(f"{n} ({', '.join(s)})" for n, s in missing.items())
    commands = "; ".join(f"devsecrets set {n}" for n in missing)
    typos = [f"{n}: did you mean {m!r}?" for n in missing if (m := closest(n, known))]
    hint = f"{'; '.join(typos)} (a typo in the stack file?)" if typos else None
    return MissingSecretsError(
        f"the stack needs {len(missing)} secret(s) the store lacks: {names}",
        hint=hint or f"add them: {commands}",
    )
