"""Git integration: a merge driver that merges store files by meaning, a textconv for diffs,
and what `resolve` does with a conflict the driver left.

Input: the three versions git hands a merge driver (base, ours, theirs), or one file for
textconv; identities and this user's approvals. Output: the merged file in place of ours, and
an exit status for git. A store file left on disk is always a valid store file, never conflict
markers: on a real conflict ours stays, theirs goes to `.devsecrets/.conflicts/NAME.sops.yaml`.
Never prints a value unless the user opts in for their own diffs (DEVSECRETS_DIFF_VALUES=1).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets as _random
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from devsecrets.errors import DevsecretsError, IntegrityError, StoreError
from devsecrets.keys import Identities
from devsecrets.store import (
    RECIPIENTS_FILE,
    SUFFIX,
    Store,
    _as_extracted,
    _atomic_write,
    _emit_recipients,
    seal,
    unseal,
    yamlload,
)
from devsecrets.store.sopsfile import SopsDocument, parse
from devsecrets.store.trust import Approvals, config_dir, printable

CONFLICTS_DIR = ".conflicts"
ATTRIBUTES = (
    "# devsecrets: merge store files by meaning, diff them without values (`devsecrets init`)\n"
    f"*{SUFFIX} merge=devsecrets diff=devsecrets\n"
    f"{RECIPIENTS_FILE} merge=devsecrets\n"
)


class GitError(DevsecretsError):
    pass


# -- setup ---------------------------------------------------------------------------------


def work_tree(directory: Path) -> Path | None:
    """The top of the git work tree holding `directory`, or None."""
    try:
        out = subprocess.run(
            ["git", "-C", str(directory), "rev-parse", "--show-toplevel"],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return Path(out.stdout.strip()) if out.returncode == 0 and out.stdout.strip() else None


def driver_command() -> str:
    """How git will start us: `devsecrets` when it is on PATH (survives upgrades), else this
    Python with `-m devsecrets`."""
    if shutil.which("devsecrets"):
        return "devsecrets"
    return f"{shlex.quote(sys.executable)} -m devsecrets"


def setup(store_root: Path, command: str | None = None) -> Path | None:
    """Write `.devsecrets/.gitattributes` and set the drivers in the repo's local git config.
    Returns the work tree, or None when the store is not in one."""
    top = work_tree(store_root)
    if top is None:
        return None
    attributes = store_root / ".gitattributes"
    if not attributes.exists() or attributes.read_text() != ATTRIBUTES:
        _atomic_write(attributes, ATTRIBUTES.encode())
    command = command or driver_command()
    for key, value in (
        ("merge.devsecrets.name", "devsecrets: merge store files by meaning"),
        ("merge.devsecrets.driver", f"{command} git-merge %O %A %B %P"),
        ("diff.devsecrets.textconv", f"{command} git-textconv"),
    ):
        done = subprocess.run(
            ["git", "-C", str(top), "config", "--local", key, value],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        if done.returncode != 0:
            raise GitError(f"git config {key} failed: {done.stderr.strip()}")
    return top


# -- merging -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Merged:
    clean: bool
    message: str


def merge(
    base: Path, ours: Path, theirs: Path, path: str, identities: Identities, env: Mapping[str, str]
) -> Merged:
    """The merge driver: writes the result into `ours`; clean=False leaves a conflict to git."""
    target = Path(path)
    store_root = target.parent
    if target.name == RECIPIENTS_FILE:
        return _merge_recipients(base, ours, theirs)
    if not target.name.endswith(SUFFIX):
        return Merged(False, f"{path} is not a store file; not merged")
    name = target.name[: -len(SUFFIX)]
    approvals = Approvals(store_root, env, lambda: identities.public)
    return _merge_secret(name, base, ours, theirs, store_root, identities, approvals)


def _merge_secret(
    name: str,
    base: Path,
    ours: Path,
    theirs: Path,
    store_root: Path,
    identities: Identities,
    approvals: Approvals,
) -> Merged:
    sides = (("base", base), ("ours", ours), ("theirs", theirs))
    texts = {side: path.read_bytes() for side, path in sides}
    keep = f"kept ours; theirs is in {store_root / CONFLICTS_DIR / (name + SUFFIX)}"
    resolve = f"`devsecrets resolve {name} --ours|--theirs|--edit`"

    def conflict(why: str) -> Merged:
        _save_conflict(store_root, name, texts["theirs"])
        return Merged(False, f"{name}: {why}; {keep}; then {resolve}")

    try:
        docs = {s: parse(t, f"{name} ({s})") if t.strip() else None for s, t in texts.items()}
    except StoreError as e:
        return conflict(f"not merged by meaning ({e.message})")
    if docs["ours"] is None or docs["theirs"] is None:
        return conflict("one side is empty")
    values: dict[str, bytes | None] = {}
    try:
        for side, doc in docs.items():
            try:
                values[side] = None if doc is None else _value(doc, identities, name)
            except _NoKey:
                if side != "base":  # a base from before you joined: equal sides still merge
                    raise
                values[side] = None
    except _NoKey:
        return conflict("none of your identities opens it, so it cannot be merged by meaning")
    except StoreError as e:
        return conflict(f"not merged by meaning ({e.message})")
    o, a, b = values["base"], values["ours"], values["theirs"]
    if a == b:
        value = a
    elif o is not None and a == o:
        value = b
    elif o is not None and b == o:
        value = a
    else:
        return conflict("both branches changed the value")
    assert value is not None
    recipients = _merge_sets(
        [s.recipient for s in docs["base"].age] if docs["base"] else [],
        [s.recipient for s in docs["ours"].age],
        [s.recipient for s in docs["theirs"].age],
    )
    for side in ("ours", "theirs"):
        doc = docs[side]
        assert doc is not None
        if values[side] == value and [s.recipient for s in doc.age] == recipients:
            if side == "theirs":
                _atomic_write(ours, texts["theirs"])
            return Merged(True, "")
    review = approvals.review({k: k for k in recipients})
    if review.added:
        who = ", ".join(c.key for c in review.added)
        return conflict(
            f"the merged recipients include keys you have not approved ({who}): "
            "run `devsecrets recipients approve` and merge again (`git merge --abort`)"
        )
    _atomic_write(ours, seal(name, value, recipients))  # a new data key, for the merged set
    return Merged(True, "")


class _NoKey(Exception):
    pass


def _value(doc: SopsDocument, identities: Identities, name: str) -> bytes:
    if doc.name != name:
        raise IntegrityError(f"integrity check failed: it holds {doc.name!r}, not {name!r}")
    opened = unseal(doc, identities, name)
    if opened is None:
        raise _NoKey
    leaf_type = opened.leaf.type if opened.leaf else "str"
    return _as_extracted(opened.plaintext, leaf_type, name)


def _merge_sets(base: Sequence[str], ours: Sequence[str], theirs: Sequence[str]) -> list[str]:
    """Three-way merge of two lists of keys: what either side added, minus what either removed."""
    merged = []
    for key in [*ours, *(k for k in theirs if k not in ours)]:
        if (key in ours and key in theirs) or key not in base:
            merged.append(key)
    return merged


def _merge_recipients(base: Path, ours: Path, theirs: Path) -> Merged:
    try:
        o, a, b = (_load_members(p) for p in (base, ours, theirs))
    except StoreError as e:
        return Merged(False, f"{RECIPIENTS_FILE}: not merged ({e.message})")
    merged: dict[str, str] = {}
    clashes = []
    for name in [*a, *(n for n in b if n not in a)]:
        x, y, z = o.get(name), a.get(name), b.get(name)
        pick = y if y == z else z if y == x else y if z == x else None
        if pick is None and y is not None and z is not None:
            clashes.append(name)
            pick = y
        if pick is not None:
            merged[name] = pick
    _atomic_write(ours, _emit_recipients(merged))
    if clashes:
        return Merged(
            False,
            f"{RECIPIENTS_FILE}: both branches changed {', '.join(clashes)}; "
            "kept ours for them; fix the file by hand, then `git add` it",
        )
    return Merged(True, "")


def _load_members(path: Path) -> dict[str, str]:
    try:
        raw: Any = yamlload.load(path.read_bytes())
    except yaml.YAMLError as e:
        raise StoreError(f"not valid YAML: {yamlload.reason(e)}") from e
    if raw in (None, ""):
        return {}
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise StoreError("not a map of member names to public keys")
    return {str(k): v.strip() for k, v in raw.items()}


def _save_conflict(store_root: Path, name: str, text: bytes) -> None:
    """Theirs, next to the store; the directory ignores itself, nothing is followed."""
    directory = store_root / CONFLICTS_DIR
    if directory.is_symlink() or (directory.exists() and not directory.is_dir()):
        what = "a symlink" if directory.is_symlink() else "not a directory"
        raise GitError(
            f"{directory} is {what}; refusing to write through it: theirs of {name} was not "
            "saved and git leaves the conflict",
            hint=f"delete it (`rm {directory}`; it is local), then `git merge --abort` "
            "and merge again",
        )
    directory.mkdir(mode=0o755, exist_ok=True)
    if not (directory / ".gitignore").exists():
        _atomic_write(directory / ".gitignore", b"*\n")
    _atomic_write(directory / (name + SUFFIX), text)


# -- after a conflict ----------------------------------------------------------------------


def conflicts_problems(store: Store) -> list[StoreError]:
    """A `.conflicts` that is not a directory (a symlink, a file): the merge driver refuses to
    write theirs there, so a conflict may be unrecorded; `ls` and `check` say so."""
    directory = store.root / CONFLICTS_DIR
    if not directory.is_symlink() and (directory.is_dir() or not directory.exists()):
        return []
    what = "a symlink" if directory.is_symlink() else "not a directory"
    return [
        StoreError(
            f"{directory} is {what}: the merge driver cannot keep the other side of a "
            "conflict there",
            hint=f"delete it (`rm {directory}`; it is local); if a merge of the store is under "
            "way, `git merge --abort` and merge again",
        )
    ]


def conflicts(store: Store) -> list[str]:
    directory = store.root / CONFLICTS_DIR
    if not directory.is_dir() or directory.is_symlink():
        return []
    return sorted(p.name[: -len(SUFFIX)] for p in directory.iterdir() if p.name.endswith(SUFFIX))


def theirs_of(store: Store, name: str) -> Path:
    path = store.root / CONFLICTS_DIR / (name + SUFFIX)
    if name not in conflicts(store) or path.is_symlink():
        raise StoreError(f"no merge conflict for {name!r}", hint="`devsecrets ls` lists them")
    return path


def take_theirs(store: Store, name: str) -> None:
    """Their file, as it was on their branch (verified before it replaces ours)."""
    path = theirs_of(store, name)
    text = path.read_bytes()
    doc = parse(text, str(path))
    if doc.name != name:
        raise IntegrityError(f"integrity check failed for {path}: it holds {doc.name!r}")
    with store.lock():
        _atomic_write(store.path_for(name), text)
    path.unlink()


def drop_conflict(store: Store, name: str) -> None:
    theirs_of(store, name).unlink()


# -- diffs ---------------------------------------------------------------------------------


def textconv(path: Path, identities: Identities, env: Mapping[str, str], cwd: Path) -> str:
    """What `git diff` shows for one store file: name, value hash, recipients by name."""
    text = path.read_bytes()
    try:
        doc = parse(text, str(path))
    except StoreError as e:
        return f"not a valid store file: {e.message}\n"
    members = _members_near(cwd)
    by_key = {v: k for k, v in members.items()}
    lines = [printable(f"secret: {doc.name}")]
    try:
        opened = unseal(doc, identities, str(path))
    except StoreError as e:
        opened = None
        lines.append(f"value: fails its integrity check ({e.message})")
    if opened is not None:
        leaf_type = opened.leaf.type if opened.leaf else "str"
        value = _as_extracted(opened.plaintext, leaf_type, str(path))
        if env.get("DEVSECRETS_DIFF_VALUES") == "1":
            lines.append(f"value: {json.dumps(value.decode(errors='backslashreplace'))}")
        else:
            lines.append(f"value: {_keyed_hash(value, env)} ({len(value)} bytes, keyed hash)")
    elif len(lines) == 1:
        digest = hashlib.sha256(doc.value.encode()).hexdigest()[:12]
        lines.append(f"value: cannot decrypt (ciphertext {digest})")
    lines.append("recipients:")
    lines += [printable(f"  {by_key.get(s.recipient, s.recipient)}") for s in doc.age]
    return "\n".join(lines) + "\n"


def _members_near(cwd: Path) -> dict[str, str]:
    from devsecrets.store import find_store

    try:
        return {k: v.strip() for k, v in find_store(cwd).recipients().items()}
    except StoreError:
        return {}


def _keyed_hash(value: bytes, env: Mapping[str, str]) -> str:
    """A short HMAC under a key that never leaves this machine: equal values show equal, and a
    diff pasted elsewhere does not let anyone test guesses of a weak value."""
    path = config_dir(env) / "diff-key"
    try:
        key = bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError):
        key = _random.token_bytes(32)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            key = bytes.fromhex(path.read_text().strip())
        else:
            with os.fdopen(fd, "w") as out:
                out.write(key.hex() + "\n")
    return hmac.new(key, value, hashlib.sha256).hexdigest()[:12]
