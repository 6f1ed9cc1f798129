"""Decide where every granted secret lives on the host and how it reaches the container.

Input: `StackModel` and the names the store holds (through `needs`). Output: `Layout` (pure
data, no I/O), with structured findings about what cannot be laid out as asked.

Why directories: a single-file bind mount pins the inode, so a file replaced by rename stays
invisible in the container, and an in-place rewrite can be read half-done (ARCHITECTURE.md,
"Measured facts"). So each
service gets its own directory, bound read-only at /run/secrets, holding exactly its secrets;
an update is a rename inside it, which a reader sees as all-old or all-new. A target outside
/run/secrets cannot get a directory without hiding the image's files there, so it is a
single-file bind, and a change to it restarts the service.
"""

from __future__ import annotations

import posixpath
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from devsecrets.buildsecrets import BuildPlan, plan_build
from devsecrets.needs import Finding, FindingKind, Needs, needs
from devsecrets.stack import SECRETS_DIR, Grant, SourceKind, StackModel


@dataclass(frozen=True, slots=True)
class MountedFile:
    grant: Grant
    store_name: str
    host_path: str  # relative to the project's runtime directory

    @property
    def in_secrets_dir(self) -> bool:
        return self.grant.target.startswith(SECRETS_DIR + "/")


@dataclass(frozen=True, slots=True)
class ServiceLayout:
    service: str
    files: tuple[MountedFile, ...]
    placeholders: tuple[str, ...]  # mount points for secrets compose still mounts itself
    kept_refs: tuple[Mapping[str, Any], ...]  # the service's secrets compose keeps handling

    @property
    def secrets_dir(self) -> str:
        return f"services/{self.service}/run-secrets"

    @property
    def binds_secrets_dir(self) -> bool:
        return any(f.in_secrets_dir for f in self.files)


@dataclass(frozen=True, slots=True)
class Layout:
    project: str
    services: tuple[ServiceLayout, ...]
    needs: Needs
    findings: tuple[Finding, ...]  # about this layout (volumes, environment secrets)
    build: BuildPlan = BuildPlan()  # build-time secrets (files for `docker compose build`)

    @property
    def missing(self) -> Mapping[str, tuple[str, ...]]:
        """Store name -> services that need it, for the secrets the store lacks."""
        return self.needs.missing

    @property
    def warnings(self) -> tuple[Finding, ...]:
        return (*self.needs.warnings, *self.findings)

    def store_names(self) -> set[str]:
        return {f.store_name for s in self.services for f in s.files} | self.build.store_names()


def plan(model: StackModel, in_store: Collection[str]) -> Layout:
    need = needs(model, in_store)
    findings: list[Finding] = []
    services = []
    for service, refs in model.raw_service_secrets.items():
        grants = [g for g in model.grants if g.service == service]
        services.append(_service_layout(service, grants, refs, need.provided, model, findings))
    return Layout(
        project=model.project,
        services=tuple(s for s in services if s.files),
        needs=need,
        findings=tuple(findings),
        build=plan_build(need),
    )


def _service_layout(
    service: str,
    grants: list[Grant],
    refs: tuple[Mapping[str, Any], ...],
    managed: Mapping[str, str],
    model: StackModel,
    findings: list[Finding],
) -> ServiceLayout:
    files: list[MountedFile] = []
    kept: list[Mapping[str, Any]] = []
    placeholders: list[str] = []
    for index, (grant, ref) in enumerate(zip(grants, refs, strict=True)):
        if grant.source not in managed:
            kept.append(ref)
            continue
        if grant.target.startswith(SECRETS_DIR + "/"):
            relative = posixpath.relpath(grant.target, SECRETS_DIR)
            host = f"services/{service}/run-secrets/{relative}"
        else:
            host = f"services/{service}/files/{index}/{posixpath.basename(grant.target)}"
        files.append(MountedFile(grant=grant, store_name=managed[grant.source], host_path=host))
    if any(f.in_secrets_dir for f in files):
        for grant in grants:
            if grant.source in managed or not grant.target.startswith(SECRETS_DIR + "/"):
                continue
            # compose mounts this one itself, on top of our read-only directory: it needs a
            # mount point there. An environment secret is copied in, which a read-only
            # directory refuses.
            placeholders.append(posixpath.relpath(grant.target, SECRETS_DIR))
            if model.sources[grant.source].kind is SourceKind.ENVIRONMENT:
                findings.append(
                    Finding(
                        FindingKind.ENVIRONMENT_SECRET,
                        grant.source,
                        (service,),
                        f"service {service}: environment secret {grant.source} cannot be "
                        f"copied under /run/secrets while devsecrets mounts it; store it with "
                        f"`devsecrets set {grant.source}`",
                    )
                )
    volume_targets = model.service_volume_targets.get(service, frozenset())
    for clash in sorted(volume_targets & ({SECRETS_DIR} | {f.grant.target for f in files})):
        findings.append(
            Finding(
                FindingKind.VOLUME_HIDES_SECRETS,
                clash,
                (service,),
                f"service {service}: a volume at {clash} hides devsecrets' secrets there",
            )
        )
    return ServiceLayout(service, tuple(files), tuple(placeholders), tuple(kept))
