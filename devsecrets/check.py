"""`devsecrets check`: everything that is wrong with this project's secrets, in one pass.

Input: cwd, environment, compose options, the store and identities. Output: a `Report`
(findings and facts). Never prints, never exits, and never puts a value anywhere: values are
compared by HMAC under a key made for this run only, so a finding names a secret and a place,
never what matched.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets as _random
import subprocess
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devsecrets.errors import DevsecretsError, NoIdentityError
from devsecrets.needs import FindingKind

if TYPE_CHECKING:
    from devsecrets.compose import ComposeOptions
    from devsecrets.keys import Identities
    from devsecrets.stack import StackModel
    from devsecrets.store import Store

MIN_VALUE = 4  # shorter values match by chance everywhere; they are not searched for
MAX_FILE = 1024 * 1024  # tracked files larger than this are not searched
# Where a value ends in config files and URLs: whitespace, quotes, and (second pass) = : , ; @ /
_LOOSE = re.compile(rb"[\s\"'`]+")
_TIGHT = re.compile(rb"[\s\"'`=:,;@/()\[\]{}<>]+")


ERROR = "error"  # check fails (exit 1)
WARNING = "warning"  # said, but check passes: `up` works and warns the same way


@dataclass(frozen=True, slots=True)
class Finding:
    code: str
    message: str
    hint: str | None = None
    secret: str | None = None
    where: str | None = None
    level: str = ERROR


@dataclass(slots=True)
class Report:
    findings: list[Finding] = field(default_factory=list)
    facts: dict[str, str] = field(default_factory=dict)  # what was checked and found working

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.level == ERROR]

    def add(self, code: str, message: str, hint: str | None = None, **extra: str) -> None:
        self.findings.append(Finding(code, message, hint, **extra))


@dataclass(frozen=True, slots=True)
class Inputs:
    """How to reach each part; each may fail, and a failure becomes a finding."""

    cwd: Path
    env: Mapping[str, str]
    options: ComposeOptions
    store: Callable[[], Store]
    identities: Callable[[], Identities]
    engine: bool = True  # also check the Docker engine and the tmpfs


def check(inputs: Inputs) -> Report:
    report = Report()
    store = _store(inputs, report)
    identities = _identities(inputs, report)
    values = _values(store, identities, report) if store is not None else {}
    stack = _stack(inputs, report)
    if store is not None and stack is not None:
        _needs(stack, store.names(), report)
    if store is not None:
        _stale(store, report)
        _conflicts(store, report)
    _plaintext(inputs, stack, values, store, report)
    if inputs.engine:
        _engine(inputs, report)
    return report


# -- the store and the identity ---------------------------------------------------------------


def _store(inputs: Inputs, report: Report) -> Store | None:
    try:
        store = inputs.store()
    except DevsecretsError as e:
        report.add("no-store", e.message, e.hint)
        return None
    report.facts["store"] = str(store.root)
    return store


def _identities(inputs: Inputs, report: Report) -> Identities | None:
    identities = inputs.identities()
    try:
        identities.require()
    except NoIdentityError as e:
        report.add("no-identity", e.message, e.hint)
        return None
    report.facts["identities"] = str(len(identities.keys))
    return identities


def _values(store: Store, identities: Identities | None, report: Report) -> dict[str, bytes]:
    """Every value this user can open; the others are findings."""
    values: dict[str, bytes] = {}
    if identities is None:
        return values
    for name in store.names():
        try:
            values[name] = store.read(name, identities).value
        except DevsecretsError as e:
            report.add(
                "undecryptable", f"cannot read secret {name}: {e.message}", e.hint, secret=name
            )
    return values


def _stale(store: Store, report: Report) -> None:
    for name in store.names():
        try:
            info = store.info(name)
        except DevsecretsError:
            continue  # already reported as undecryptable
        if info.stale:
            report.add(
                "stale-recipients",
                f"secret {name}: its key stanzas do not match recipients.yaml "
                f"(it is wrapped for {', '.join(info.recipients) or 'nobody'})",
                "run `devsecrets rekey` (a recipient of every file must run it)",
                secret=name,
            )


def _conflicts(store: Store, report: Report) -> None:
    from devsecrets.gitdriver import conflicts, conflicts_problems

    for problem in conflicts_problems(store):
        report.add("merge-conflict", problem.message, problem.hint)
    for name in conflicts(store):
        report.add(
            "merge-conflict",
            f"secret {name}: a git merge left a conflict (ours is in the store, theirs in "
            f"{store.root.name}/.conflicts/)",
            f"run `devsecrets resolve {name} --ours|--theirs|--edit`, then `git add`",
            secret=name,
        )


# -- the stack ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Stack:
    model: StackModel
    raw: dict[str, Any]  # compose's resolved config (JSON): read for `environment:` only
    project_dir: Path


def _stack(inputs: Inputs, report: Report) -> _Stack | None:
    from devsecrets import compose
    from devsecrets.stack import read_model

    try:
        found = compose.find_compose(inputs.env)
        report.facts["compose"] = f"{' '.join(found.argv)} {'.'.join(map(str, found.version))}"
        project = compose.resolve_project(found, inputs.options, inputs.cwd, inputs.env)
        raw = compose.load_config(project, inputs.env, inputs.cwd)
        model = read_model(raw)
    except DevsecretsError as e:
        code = "no-compose" if "compose" in e.message and "stack" not in e.message else "stack"
        report.add(code, e.message, e.hint)
        return None
    report.facts["stack"] = ", ".join(str(p) for p in project.files)
    return _Stack(model, raw, project.files[0].parent if project.files else inputs.cwd)


def _needs(stack: _Stack, names: list[str], report: Report) -> None:
    """What `up` would say about this stack, from the same step (`needs`, then `layout`):
    a secret the store lacks is a problem; a plaintext `file:` secret, an environment secret
    under a mounted /run/secrets or a volume over it are warnings. Then the store entries no
    part of the stack file names."""
    from devsecrets.deploy import DEPLOY_KEY  # deploy's own hash key: used, by deploy
    from devsecrets.layout import plan

    layout = plan(stack.model, set(names))
    builds = dict(layout.build.missing)  # `devsecrets build` (and `up --build`) would stop
    for found in (*layout.needs.findings, *layout.findings):
        if found.kind is FindingKind.MISSING and found.secret in builds:
            _missing(found.secret, (*found.services, *builds.pop(found.secret)), names, report)
            continue
        report.add(
            found.kind.value,
            found.message,
            found.hint,
            level=ERROR if found.kind.is_error else WARNING,
            secret=found.secret,
        )
    for name, builders in sorted(builds.items()):
        _missing(name, tuple(f"{s} (build)" for s in builders), names, report)
    for name in sorted(set(names) - layout.needs.referenced - {DEPLOY_KEY}):
        report.add(
            "unused",
            f"secret {name} is in the store but the stack does not use it",
            f"remove it with `devsecrets rm {name}` once nothing needs it",
            secret=name,
        )


def _missing(name: str, services: tuple[str, ...], names: list[str], report: Report) -> None:
    """A secret the store lacks, named with everyone who needs it (`needs`' wording)."""
    from devsecrets.suggest import closest

    typo = closest(name, names)
    report.add(
        FindingKind.MISSING.value,
        f"the store lacks secret {name} (needed by {', '.join(services)})",
        f"did you mean {typo!r}? (a typo in the stack file?)"
        if typo
        else f"add it: `devsecrets set {name}`",
        secret=name,
    )


# -- plaintext ---------------------------------------------------------------------------------


class _Matcher:
    """Keyed fingerprints of the values; texts are cut into candidates and looked up."""

    def __init__(self, values: Mapping[str, bytes]) -> None:
        self._key = _random.token_bytes(32)  # this run only: the digests mean nothing later
        self._names: dict[bytes, str] = {}
        for name, value in values.items():
            for part in _parts(value):
                self._names.setdefault(self._digest(part), name)

    def _digest(self, data: bytes) -> bytes:
        return hmac.new(self._key, data, hashlib.sha256).digest()

    def __bool__(self) -> bool:
        return bool(self._names)

    def find(self, text: bytes) -> Iterator[tuple[str, int]]:
        """(secret name, line number) for each line that holds a value."""
        for number, line in enumerate(text.splitlines(), start=1):
            seen: set[str] = set()
            for candidate in _candidates(line):
                name = self._names.get(self._digest(candidate))
                if name is not None and name not in seen:
                    seen.add(name)
                    yield name, number


def _parts(value: bytes) -> set[bytes]:
    """What we look for: the value itself and, for a multi-line value (a PEM key), each of
    its long lines, so a pasted key is found line by line."""
    parts = {value.strip()} if len(value.strip()) >= MIN_VALUE else set()
    lines = value.strip().splitlines()
    if len(lines) > 1:
        parts |= {ln.strip() for ln in lines if len(ln.strip()) >= 16}
    return parts


def _candidates(line: bytes) -> set[bytes]:
    line = line.strip()
    found = {line}
    for pattern in (_LOOSE, _TIGHT):
        found.update(t for t in pattern.split(line) if len(t) >= MIN_VALUE)
    return found


def _plaintext(
    inputs: Inputs,
    stack: _Stack | None,
    values: Mapping[str, bytes],
    store: Store | None,
    report: Report,
) -> None:
    project_dir = stack.project_dir if stack else inputs.cwd
    root = tracked_root(project_dir)
    tracked = _tracked(root) if root is not None else None
    if tracked is None:
        report.facts["git"] = "not a git repository: tracked files not checked"
    if stack is not None and tracked is not None:
        _tracked_secret_files(stack, tracked, report)
    matcher = _Matcher(values)
    if not matcher:
        return
    if stack is not None:
        _in_environment(stack, matcher, report)
    env_file = project_dir / ".env"
    searched = {env_file.resolve()}
    if env_file.is_file():
        _search_file(env_file, ".env", matcher, report)
    store_root = Path(store.root).resolve() if store is not None else None
    for path in tracked or ():
        resolved = path.resolve()
        if resolved in searched or (store_root and resolved.is_relative_to(store_root)):
            continue
        shown = str(path.relative_to(root)) if root else str(path)
        _search_file(path, shown, matcher, report)


def _in_environment(stack: _Stack, matcher: _Matcher, report: Report) -> None:
    for service, spec in sorted((stack.raw.get("services") or {}).items()):
        environment = spec.get("environment") or {}
        for variable, value in sorted(environment.items()):
            if value is None:
                continue
            for name, _ in matcher.find(str(value).encode()):
                report.add(
                    "value-in-environment",
                    f"service {service}: environment variable {variable} holds the value of "
                    f"secret {name} in plain text",
                    f"mount it as a secret and read {variable}_FILE instead",
                    secret=name,
                    where=f"services.{service}.environment.{variable}",
                )


def _search_file(path: Path, shown: str, matcher: _Matcher, report: Report) -> None:
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > MAX_FILE:
            return
        text = path.read_bytes()
    except OSError:
        return
    if b"\0" in text[:8192]:
        return  # binary
    for name, line in matcher.find(text):
        report.add(
            "value-in-file",
            f"{shown}:{line} holds the value of secret {name} in plain text",
            "remove it from the file (and from git history if it was committed); "
            f"rotate {name} if it was ever pushed",
            secret=name,
            where=f"{shown}:{line}",
        )


def tracked_root(directory: Path) -> Path | None:
    out = _git(directory, "rev-parse", "--show-toplevel")
    return Path(out.decode().strip()) if out is not None else None


def _tracked(root: Path) -> list[Path] | None:
    out = _git(root, "ls-files", "-z")
    if out is None:
        return None
    return [root / p.decode(errors="surrogateescape") for p in out.split(b"\0") if p]


def _git(directory: Path, *args: str) -> bytes | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(directory), *args], capture_output=True, timeout=60, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def _tracked_secret_files(stack: _Stack, tracked: list[Path], report: Report) -> None:
    from devsecrets.stack import SourceKind

    known = {p.resolve() for p in tracked}
    for key, source in sorted(stack.model.sources.items()):
        if source.kind is not SourceKind.FILE or not source.file:
            continue
        path = Path(source.file)
        path = path if path.is_absolute() else stack.project_dir / path
        if path.resolve() in known:
            report.add(
                "plaintext-tracked",
                f"secret {key}: its plaintext file {source.file} is tracked by git",
                f"`git rm --cached {source.file}` and commit (it is deleted here but still in "
                "git); rotate it if it was ever pushed"
                if not os.path.lexists(path)
                else f"`devsecrets import` stores it, then `git rm --cached {source.file}`; "
                "rotate it if it was ever pushed",
                secret=key,
                where=str(source.file),
            )


# -- the engine ---------------------------------------------------------------------------------


def _engine(inputs: Inputs, report: Report) -> None:
    from devsecrets import compose
    from devsecrets.runtime_dir import private_root

    try:
        compose.check_engine(inputs.env)
        report.facts["engine"] = "answers"
    except DevsecretsError as e:
        report.add("no-engine", e.message, e.hint)
    try:
        root = private_root(inputs.env)
        report.facts["tmpfs"] = str(root)
    except DevsecretsError as e:
        report.add("no-tmpfs", e.message, e.hint)
    if "engine" in report.facts and "tmpfs" in report.facts and "compose" in report.facts:
        report.facts["up-mode"] = "host: docker compose on this engine, secrets on tmpfs"
