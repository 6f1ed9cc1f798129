"""The team store: `.devsecrets/` with one SOPS file per secret and `recipients.yaml`.

Input: a store directory, identities. Output: `Secret` values (bytes, hidden from repr) and
`SecretInfo` listings. Writes are atomic (temp file, fsync, rename) and serialized by a lock.
Never writes plaintext anywhere; never puts a value into an exception message.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import secrets as _random
import stat
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from devsecrets import fastlayout
from devsecrets.atomic import TEMP_GLOB, write_atomic
from devsecrets.errors import (
    ConcurrentChangeError,
    DecryptError,
    EmptySecretError,
    IntegrityError,
    RecipientError,
    SecretNotFoundError,
    StoreError,
    StoreNotFoundError,
    UsageProblem,
    reason,
)
from devsecrets.keys import Identities
from devsecrets.store import age, cipher, journal, sopsfile
from devsecrets.store.sopsfile import AgeStanza, SopsDocument
from devsecrets.store.trust import Approvals, Review
from devsecrets.suggest import did_you_mean

STORE_DIR = ".devsecrets"
SUFFIX = ".sops.yaml"
RECIPIENTS_FILE = "recipients.yaml"
LOCK_FILE = ".lock"
# Swarm's limits (swarmkit validateSecretSpec; ARCHITECTURE.md, "Measured facts").
MAX_VALUE_SIZE = 500 * 1024 - 1
MAX_RAW_BYTES = 4 * 1024 * 1024  # far above the largest valid file; only compared, not parsed
# Names are matched whole (re.fullmatch: `$` would let a trailing newline through).
_NAME = re.compile(r"[a-zA-Z0-9](?:[a-zA-Z0-9_.-]{0,62}[a-zA-Z0-9])?")
_MEMBER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
# `sops` is the file's metadata key: a secret of that name could never be read back.
RESERVED_NAMES = frozenset({"sops"})
# What the reader accepts, so a hostile file cannot make it read gigabytes. The largest valid
# store file is the largest value's ENC[...] leaf plus one age stanza per recipient (measured:
# about 560 bytes for X25519, 750 for ssh-ed25519; budgeted 1 KiB) plus a few lines.
MAX_RECIPIENTS = 256
_LEAF_OVERHEAD = len("ENC[AES256_GCM,data:,iv:,tag:,type:bytes]") + 2 * 24  # iv, tag: 16 B b64
_MAX_LEAF = _LEAF_OVERHEAD + 4 * ((MAX_VALUE_SIZE + 2) // 3)
MAX_FILE_SIZE = 64 + _MAX_LEAF + MAX_RECIPIENTS * 1024 + 4096  # name line, leaf, stanzas, rest
MAX_RECIPIENTS_FILE_SIZE = MAX_RECIPIENTS * 256 + 4096  # name: key per line, comments
GITIGNORE = (
    "# devsecrets: the writers' lock, interrupted temp files, an unfinished `recipients rm`,\n"
    "# unresolved merge conflicts\n"
    f".lock\n{TEMP_GLOB}\n.journal\n.conflicts\n"  # no `/`: a symlink matches too
)


@dataclass(frozen=True, slots=True)
class Secret:
    name: str
    value: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class SecretInfo:
    name: str
    size: int
    lastmodified: str
    recipients: tuple[str, ...]
    stale: bool  # recipients differ from recipients.yaml


@dataclass(slots=True)
class _Opened:
    doc: SopsDocument
    key: bytes = field(repr=False)
    plaintext: bytes = field(repr=False)
    leaf: cipher.Leaf | None


def validate_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise UsageProblem(
            f"invalid secret name {name!r}",
            hint="use 1-64 letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit (Swarm's rule)",
        )
    if name.endswith("_unencrypted"):
        raise UsageProblem(
            f"invalid secret name {name!r}: sops leaves keys ending in _unencrypted in plaintext"
        )
    if name in RESERVED_NAMES:
        raise UsageProblem(
            f"invalid secret name {name!r}: it is reserved (the sops metadata key)",
            hint="choose another name",
        )
    return name


def _is_valid_name(name: str) -> bool:
    try:
        validate_name(name)
    except UsageProblem:
        return False
    return True


def validate_size(value: bytes) -> bytes:
    if len(value) > MAX_VALUE_SIZE:
        raise UsageProblem(
            f"value is {len(value)} bytes; Swarm's limit is {MAX_VALUE_SIZE} bytes (under 500 KiB)"
        )
    return value


def find_store(start: Path, explicit: Path | None = None) -> Store:
    """`--store`/DEVSECRETS_STORE, else the nearest `.devsecrets/` walking up like git."""
    if explicit is not None:
        if not _lexists(explicit / RECIPIENTS_FILE):
            raise StoreNotFoundError(
                f"no devsecrets store at {explicit}", hint="run `devsecrets init` there first"
            )
        return Store(explicit)
    for directory in (start, *start.parents):
        candidate = directory / STORE_DIR
        if _lexists(candidate / RECIPIENTS_FILE):
            return Store(candidate)
    raise StoreNotFoundError(
        f"no {STORE_DIR}/ store in {start} or any parent directory",
        hint="run `devsecrets init` in your project root, or pass --store",
    )


def init_store(root: Path, member: str, recipient: str) -> tuple[Store, bool]:
    """Create the store (or keep it); `recipient` becomes its first member if it has none.
    Returns (store, added)."""
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StoreError(f"cannot create the store {root}: {e.strerror}") from e
    ignore = root / ".gitignore"
    if not ignore.exists():
        _atomic_write(ignore, GITIGNORE.encode())
    store = Store(root)
    if not (root / RECIPIENTS_FILE).exists():
        _atomic_write(root / RECIPIENTS_FILE, _emit_recipients({}))
    members = store.recipients()
    if members:  # someone else's store: joining is a request a member approves (store.join)
        return store, False
    age.parse_recipient(recipient)
    with store.lock():
        store._save_recipients({**members, _unique(member, members): recipient})
    return store, True


def _unique(member: str, members: Mapping[str, str]) -> str:
    base = re.sub(r"[^A-Za-z0-9._@-]", "-", member).strip("-._@") or "me"
    name, n = base, 2
    while name in members:
        name, n = f"{base}-{n}", n + 1
    return name


class Store:
    def __init__(self, root: Path, approvals: Approvals | None = None) -> None:
        self.root = root
        # The CLI always sets this: every write then encrypts only to approved recipients.
        self.approvals = approvals

    def check_recipients(self, members: Mapping[str, str] | None = None) -> Review | None:
        """Refuse (UnapprovedRecipientsError) unless this user approved every recipient."""
        if self.approvals is None:
            return None
        return self.approvals.check(self.recipients() if members is None else members)

    def path_for(self, name: str) -> Path:
        return self.root / (validate_name(name) + SUFFIX)

    def names(self) -> list[str]:
        """Every entry with a valid secret name (whatever its type: reading it says what is
        wrong). Entries named `*.sops.yaml` with an invalid name are in `bad_entries`."""
        return sorted(n for n in self._entry_names() if _is_valid_name(n))

    def bad_entries(self) -> list[StoreError]:
        """One error per `*.sops.yaml` entry whose name no secret can have."""
        return [
            StoreError(
                f"bad store entry {n + SUFFIX!r} in {self.root}: not a valid secret name",
                hint=f"remove it with `devsecrets rm {_shell_quote(n)}`",
            )
            for n in sorted(self._entry_names())
            if not _is_valid_name(n)
        ]

    def _entry_names(self) -> list[str]:
        try:
            with os.scandir(self.root) as entries:
                found = [e.name for e in entries]
        except OSError as e:
            raise StoreError(f"cannot list {self.root}: {e.strerror}") from e
        return [f[: -len(SUFFIX)] for f in found if f.endswith(SUFFIX) and not f.startswith(".")]

    def require_all_readable_names(self) -> list[str]:
        """`names()`, or a refusal if any entry is badly named: commands that rewrite the whole
        store (rekey, recipients) must not leave an entry behind unrotated."""
        bad = self.bad_entries()
        if bad:
            first = bad[0]
            more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
            raise StoreError(f"{first.message}{more}; nothing was changed", hint=first.hint)
        return self.names()

    def listing(self) -> tuple[list[SecretInfo], list[StoreError]]:
        """What `ls` shows: the entries it can read, and one error per entry it cannot."""
        infos: list[SecretInfo] = []
        problems: list[StoreError] = list(self.bad_entries())
        members = self.recipients()
        for name in self.names():
            try:
                infos.append(self.info(name, members))
            except StoreError as e:
                problems.append(e)
        return infos, problems

    def recipients(self) -> dict[str, str]:
        path = self.root / RECIPIENTS_FILE
        text = _read_capped(
            path,
            MAX_RECIPIENTS_FILE_SIZE,
            lambda: StoreNotFoundError(f"{path} is missing", hint="run `devsecrets init`"),
        )
        raw: Any = fastlayout.parse_recipients(text)  # as `_emit_recipients` writes it
        if raw is None:
            import yaml

            from devsecrets.store import yamlload

            try:
                raw = yamlload.load(text)
            except yaml.YAMLError as e:
                why = yamlload.reason(e)
                hint = (
                    "write each member's key out in full (`name: age1...`, one a line); "
                    "anchors and aliases are not allowed here"
                    if "anchors" in why or "aliases" in why
                    else "it maps member names to keys (`name: age1...`, one a line); "
                    "restore it from git"
                )
                raise StoreError(f"{path} is not valid YAML ({why})", hint=hint) from e
        if raw in (None, ""):
            return {}
        if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
            raise StoreError(f"{path} must map member names to age public keys")
        bad = [k for k in raw if not _MEMBER.fullmatch(k)]
        if bad:
            raise StoreError(f"{path} has an invalid member name {bad[0]!r}")
        if len(raw) > MAX_RECIPIENTS:
            raise StoreError(f"{path} lists {len(raw)} members; the limit is {MAX_RECIPIENTS}")
        return dict(raw)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """One writer at a time; the kernel drops the lock if a writer is killed. The lock file
        is opened without following a symlink (a committed `.lock` symlink must not make us
        create a file at its target) and must be a regular file."""
        path = self.root / LOCK_FILE
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(path, flags, 0o600)
        except OSError as e:
            raise StoreError(
                f"cannot open the writers' lock {path}: "
                + ("it is a symlink" if e.errno == errno.ELOOP else str(e.strerror)),
                hint=f"it is never part of the store: delete it (`rm {path}`)",
            ) from e
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise StoreError(
                    f"the writers' lock {path} is not a regular file",
                    hint="it is never part of the store: delete it",
                )
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._clean_temp_files()
            yield
        finally:
            os.close(fd)

    def _clean_temp_files(self) -> None:
        """Remove temp files a killed writer left (only files and symlinks, never followed)."""
        for stale in self.root.glob(TEMP_GLOB):
            with contextlib.suppress(OSError):
                if not stat.S_ISDIR(stale.lstat().st_mode):
                    stale.unlink()

    # -- reading -------------------------------------------------------------------------

    def _where(self, name: str) -> str:
        return str(self.path_for(name))

    def _not_found(self, name: str, *, suggest_set: bool = True) -> SecretNotFoundError:
        """A typo of an existing name points at it; only a new name suggests `set`."""
        guess = did_you_mean(name, self.names())
        hint = f"add it with `devsecrets set {name}`" if suggest_set and not guess else None
        return SecretNotFoundError(f"no secret {name!r} in {self.root}{guess}", hint=hint)

    def _load(self, name: str) -> SopsDocument:
        path = self.path_for(name)
        try:
            doc = sopsfile.parse(
                _read_capped(path, MAX_FILE_SIZE, lambda: self._not_found(name)), str(path)
            )
        except IntegrityError as e:
            e.hint = e.hint or (
                f"look at what is in it and remove it yourself (`rm -r {path}`), "
                f"then `devsecrets set {name}`"
                if _is_full_dir(path)
                else f"restore it from git, or replace it: `devsecrets rm {name}`, "
                f"then `devsecrets set {name}`"
            )
            raise
        if doc.name != name:
            raise IntegrityError(
                f"integrity check failed for {path}: it holds secret {doc.name!r}, not {name!r} "
                "(renamed or swapped?)"
            )
        return doc

    def _open(self, name: str, identities: Identities) -> _Opened:
        doc = self._load(name)
        where = self._where(name)
        opened = unseal(doc, identities.require(), where)
        if opened is None:
            raise DecryptError(
                f"none of your identities can open {where}; "
                f"yours: {describe_identities(identities)}; its recipients: "
                f"{', '.join(self._member_names(doc, self.recipients())) or 'none'}",
                hint=self._no_access_hint(identities),
            )
        return opened

    def _no_access_hint(self, identities: Identities) -> str:
        """After `init` recorded a join request for one of our keys, the exact command a member
        runs; else how to ask for access."""
        from devsecrets.store import join

        mine = {p.strip() for p in identities.public if p}
        for request in join.requests(self):
            if request.key in mine:
                return (
                    f"your join request is {join.REQUESTS_DIR}/{request.name}.pub: commit and "
                    "push it, "
                    f"ask a member to run `devsecrets recipients add {request.name}` and push, "
                    "then pull"
                )
        return (
            "send a member your public key (`devsecrets whoami`) and ask them to run "
            "`devsecrets recipients add YOU KEY`, or run `devsecrets init` to request access"
        )

    def read(self, name: str, identities: Identities) -> Secret:
        opened = self._open(name, identities)
        leaf_type = opened.leaf.type if opened.leaf else "str"
        return Secret(name, _as_extracted(opened.plaintext, leaf_type, self._where(name)))

    def read_value(self, name: str, identities: Identities) -> bytes:
        """The value as Swarm would take it: an empty one is an EmptySecretError."""
        value = self.read(name, identities).value
        if not value:
            raise EmptySecretError(
                f"secret {name} is empty; Swarm refuses empty secrets",
                hint=f"give it a value with `devsecrets set {name}`",
            )
        return value

    def info(self, name: str, members: Mapping[str, str] | None = None) -> SecretInfo:
        doc = self._load(name)
        size = 0 if doc.value == "" else len(cipher.parse_leaf(doc.value, self._where(name)).data)
        if members is None:
            members = self.recipients()
        return SecretInfo(
            name=name,
            size=size,
            lastmodified=doc.lastmodified,
            recipients=tuple(self._member_names(doc, members)),
            stale={s.recipient for s in doc.age} != set(members.values()),
        )

    def _member_names(self, doc: SopsDocument, members: Mapping[str, str]) -> list[str]:
        by_key = {v: k for k, v in members.items()}
        return [by_key.get(s.recipient, s.recipient[:16] + "…") for s in doc.age]

    # -- writing -------------------------------------------------------------------------

    def write(self, name: str, value: bytes, identities: Identities) -> bool:
        """Store `value` under `name`. Returns False when nothing had to change."""
        validate_name(name)
        validate_size(value)
        with self._writing():
            self.check_recipients()
            return self._write_locked(name, value, identities, rotate=False, sync_dir=False)

    def raw(self, name: str) -> bytes | None:
        """The stored file's bytes as they are now (None if absent), to notice a change."""
        try:
            fd = os.open(self.path_for(name), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StoreError(f"cannot read {self._where(name)}: {e.strerror}") from e
        with os.fdopen(fd, "rb") as f:
            return f.read(MAX_RAW_BYTES) if stat.S_ISREG(os.fstat(fd).st_mode) else b""

    def write_unless_changed(
        self, name: str, value: bytes, identities: Identities, since: bytes | None
    ) -> bool:
        """`write`, but only if the stored file still has the bytes `since` (None: absent);
        otherwise ConcurrentChangeError and nothing written (`edit` uses it)."""
        validate_name(name)
        validate_size(value)
        with self._writing():
            if self.raw(name) != since:
                raise ConcurrentChangeError(
                    f"{name} changed in the store while you were editing it; nothing stored",
                    hint=f"run `devsecrets edit {name}` again, or add --force to overwrite",
                )
            return self._write_locked(name, value, identities, rotate=False, sync_dir=False)

    def write_many(self, values: Mapping[str, bytes], identities: Identities) -> dict[str, bool]:
        """Store several values together, under one lock: a reader that waits for the lock
        (`settled`) sees all of them or none. Returns, per name, whether it changed."""
        for name, value in values.items():
            validate_name(name)
            validate_size(value)
        with self._writing():
            return {
                name: self._write_locked(name, value, identities, rotate=False, sync_dir=False)
                for name, value in values.items()
            }

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """The writers' lock for new values, with the store directory fsynced once after it
        is released: a watcher waiting for the lock reads the new files at once (a directory
        fsync on disk takes milliseconds), and the caller still returns only once they are
        durable. Each file itself is fsynced before its rename, inside the lock."""
        try:
            with self.lock():
                yield
        except BaseException:
            with contextlib.suppress(OSError):
                self._sync_root()
            raise
        with _os_errors("write", self.root):
            self._sync_root()

    def _sync_root(self) -> None:
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def settled(self, timeout: float = 10.0) -> Iterator[None]:
        """Wait until no writer holds the lock and keep writers out meanwhile (a shared lock),
        so a multi-secret write is read whole. Creates nothing; without a lock file (no write
        ever happened here) or after `timeout`, reads go ahead: each file is atomic anyway."""
        try:
            fd = os.open(self.root / LOCK_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            fd = -1
        try:
            deadline = time.monotonic() + timeout
            while fd >= 0:
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.002)
            yield
        finally:
            if fd >= 0:
                os.close(fd)

    def _write_locked(
        self,
        name: str,
        value: bytes,
        identities: Identities,
        *,
        rotate: bool,
        sync_dir: bool = True,
    ) -> bool:
        members = self.recipients()
        self.check_recipients(members)  # every encryption goes through here, so does the check
        wanted = list(members.values())
        if not wanted:
            raise RecipientError(
                f"{self.root / RECIPIENTS_FILE} lists no recipients",
                hint="add one with `devsecrets recipients add NAME KEY`",
            )
        old: _Opened | None = None
        if self.path_for(name).exists():
            old = self._open(name, identities)
        key: bytes | None = None
        stanzas: list[AgeStanza] = []
        iv = None
        if old is not None and not rotate:
            have = [s.recipient for s in old.doc.age]
            same = old.plaintext == value and (old.leaf is None or old.leaf.type == "str")
            if same and have == wanted:
                return False  # byte for byte as it is
            if same and set(have) <= set(wanted):
                # Only members to add, same value: whoever holds this data key already knows
                # this value, so keeping it (and the value's line) leaks nothing new.
                key = old.key
                kept = {s.recipient: s for s in old.doc.age}
                stanzas = [kept.get(r) or age.wrap(key, r) for r in wanted]
                iv = old.leaf.iv if old.leaf is not None else None
        # A new value, or someone left, or a key we do not know: always a fresh data key. A
        # data key found in a file may have been planted by whoever committed it.
        data = seal(name, value, wanted, key, stanzas, iv, old.doc.version if old else "")
        _atomic_write(self.path_for(name), data, sync_dir=sync_dir)
        return True

    def remove(self, name: str) -> None:
        """Remove an entry, well named or not (`NAME` or its file name `NAME.sops.yaml`),
        directly in the store: a file, a symlink (never followed), a FIFO or socket (never
        opened), or an empty directory; a directory with files in it is refused."""
        if not name or "/" in name or "\0" in name or name.startswith("."):
            raise SecretNotFoundError(f"no secret {name!r} in {self.root}")
        with self.lock():
            dir_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                entry, st = name + SUFFIX, _lstat_at(name + SUFFIX, dir_fd)
                if st is None and name.endswith(SUFFIX):
                    entry, st = name, _lstat_at(name, dir_fd)
                if st is None:
                    raise self._not_found(name, suggest_set=False)
                try:
                    if stat.S_ISDIR(st.st_mode):
                        os.rmdir(entry, dir_fd=dir_fd)  # only an empty one; never a symlink
                    else:
                        os.unlink(entry, dir_fd=dir_fd)  # a FIFO is not opened, a link not followed
                except OSError as e:
                    if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
                        raise StoreError(
                            f"{self.root / entry} is a directory with files in it; "
                            "`rm` removes only an empty one",
                            hint=f"look at what is in it and remove it yourself "
                            f"(`rm -r {self.root / entry}`)",
                        ) from e
                    raise StoreError(f"cannot remove {self.root / entry}: {e.strerror}") from e
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    # -- recipients ----------------------------------------------------------------------

    def add_recipient(
        self, member: str, key: str, identities: Identities, progress: Progress | None = None
    ) -> int:
        """Add a member and wrap every file's data key for them. Returns files touched."""
        _validate_member(member)
        age.parse_recipient(key)
        with self.lock():
            members = self.recipients()
            if member in members:
                raise RecipientError(f"recipient {member!r} already exists")
            if key.strip() in members.values():
                raise RecipientError("that key is already a recipient")
            self.check_recipients(members)  # the others must be approved; this one we are adding
            # Decrypt everything first: a file we cannot open stops us before anything changes.
            names = self.require_all_readable_names()
            values = {n: self._open(n, identities).plaintext for n in names}
            members = {**members, member: key.strip()}
            if self.approvals is not None:
                self.approvals.accept(members)
            self._save_recipients(members)
            return self._rewrite(values, identities, rotate=False, progress=progress)

    def pending(self) -> StoreError | None:
        """Set if an interrupted `recipients rm` has not finished (every command says it)."""
        if not journal.read(self.root, _read_capped):  # the usual case: one failed open()
            return None
        owed = self._owed(self.recipients())
        return journal.describe(owed) if owed else None

    def _owed(self, members: Mapping[str, str]) -> dict[str, str]:
        """Removed members (journal) whose key is not a recipient again."""
        removed = journal.read(self.root, _read_capped)
        return {m: k for m, k in removed.items() if k not in members.values()}

    def remove_recipient(
        self, member: str, identities: Identities, progress: Progress | None = None
    ) -> int:
        """Remove a member and rotate every data key, so they cannot read later writes. A
        removal that was interrupted (the journal names the member) is finished instead."""
        with self.lock():
            members = self.recipients()
            owed = self._owed(members)
            if member not in members and member in owed:
                return self._finish_removal(owed, identities, progress)
            if member not in members:
                raise RecipientError(f"no recipient {member!r}; see `devsecrets recipients ls`")
            if len(members) == 1:
                raise RecipientError(
                    "cannot remove the last recipient: nobody could read the store"
                )
            # Decrypt everything first, so a file we cannot open stops us before anything changes.
            staying = {m: k for m, k in members.items() if m != member}
            self.check_recipients(staying)  # rotating re-encrypts to everyone who stays
            names = self.require_all_readable_names()
            values = {n: self._open(n, identities).plaintext for n in names}
            journal.write(self.root, {**owed, member: members[member]}, _atomic_write)
            gone = members.pop(member)
            self._save_recipients(members)
            if self.approvals is not None:  # only now: an interrupted rm can run again
                self.approvals.accept(members, revoked=[gone.strip()])
            touched = self._rewrite(values, identities, rotate=True, progress=progress)
            journal.clear(self.root)
            return touched

    def _finish_removal(
        self, owed: Mapping[str, str], identities: Identities, progress: Progress | None
    ) -> int:
        """Rotate the files that still hold a removed key, then forget the journal."""
        keys = set(owed.values())
        names = [
            n
            for n in self.require_all_readable_names()
            if keys & {s.recipient for s in self._load(n).age}
        ]
        values = {n: self._open(n, identities).plaintext for n in names}
        touched = self._rewrite(values, identities, rotate=True, progress=progress)
        journal.clear(self.root)
        return touched

    def rekey(self, identities: Identities, progress: Progress | None = None) -> int:
        with self.lock():
            self.check_recipients()
            touched = self._rewrite_all(identities, rotate=True, progress=progress)
            journal.clear(self.root)  # every key rotated: nothing is owed any more
            return touched

    def _rewrite_all(
        self, identities: Identities, *, rotate: bool, progress: Progress | None
    ) -> int:
        names = self.require_all_readable_names()
        values = {n: self._open(n, identities).plaintext for n in names}
        return self._rewrite(values, identities, rotate=rotate, progress=progress)

    def _rewrite(
        self,
        values: Mapping[str, bytes],
        identities: Identities,
        *,
        rotate: bool,
        progress: Progress | None,
    ) -> int:
        touched = 0
        for done, (name, value) in enumerate(values.items(), start=1):
            touched += self._write_locked(name, value, identities, rotate=rotate)
            if progress:
                progress(done, len(values))
        return touched

    def _save_recipients(self, members: Mapping[str, str]) -> None:
        _atomic_write(self.root / RECIPIENTS_FILE, _emit_recipients(members))


Progress = Callable[[int, int], None]


def describe_identities(identities: Identities) -> str:
    """`age1abc… (from FILE)` per identity; public keys only, never key material."""
    return ", ".join(
        f"{public or 'public key unknown'} (from {source})" for public, source in identities.origins
    )


def unseal(doc: SopsDocument, identities: Identities, where: str) -> _Opened | None:
    """Decrypt and verify one document; None when no identity opens it."""
    key = age.unwrap(doc.age, identities.keys)
    if key is None:
        return None
    leaf = None if doc.value == "" else cipher.parse_leaf(doc.value, where)
    aad = f"{doc.name}:".encode()
    plaintext = b"" if leaf is None else cipher.decrypt(key, leaf, aad, where)
    stored_mac = cipher.parse_leaf(doc.mac, where + " (mac)")
    mac = cipher.decrypt(key, stored_mac, doc.lastmodified.encode(), where)
    if not cipher.macs_equal(mac.decode(errors="replace"), cipher.mac_hex([plaintext])):
        raise IntegrityError(f"integrity check failed for {where}: MAC mismatch")
    return _Opened(doc=doc, key=key, plaintext=plaintext, leaf=leaf)


def seal(
    name: str,
    value: bytes,
    recipients: list[str],
    key: bytes | None = None,
    stanzas: list[AgeStanza] | None = None,
    iv: bytes | None = None,
    old_version: str = "",
) -> bytes:
    """The file text for `value`, under a fresh data key unless one is passed with its stanzas."""
    if key is None or not stanzas:
        key, stanzas = _fresh_key(recipients)
        iv = None
    aad = f"{name}:".encode()
    encrypted = "" if value == b"" else cipher.format_leaf(cipher.encrypt(key, value, aad, iv))
    now = sopsfile.format_time(datetime.now(UTC))
    mac = cipher.encrypt(key, cipher.mac_hex([value]).encode(), now.encode())
    doc = SopsDocument(
        name=name,
        value=encrypted,
        age=tuple(stanzas),
        lastmodified=now,
        mac=cipher.format_leaf(mac),
        version=sopsfile.newer_version(old_version),
    )
    return sopsfile.emit(doc)


def _validate_member(member: str) -> None:
    if not _MEMBER.fullmatch(member):
        raise UsageProblem(
            f"invalid recipient name {member!r}", hint="use letters, digits, . _ @ -"
        )


def _fresh_key(recipients: list[str]) -> tuple[bytes, list[AgeStanza]]:
    key = _random.token_bytes(cipher.DATA_KEY_SIZE)
    return key, [age.wrap(key, r) for r in recipients]


# The `type` field is not authenticated (neither AAD nor MAC covers it), so a typed value
# must also parse as its type: a `str` relabelled `int` then fails instead of gaining a "\n".
_TYPED = {
    "int": re.compile(rb"-?[0-9]+"),
    "float": re.compile(rb"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)|[+-]?Inf|NaN"),
    "bool": re.compile(rb"True|False"),
    "time": re.compile(rb"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+(?:Z|[+-][0-9]{2}:[0-9]{2})"),
}


def _as_extracted(plaintext: bytes, leaf_type: str, where: str) -> bytes:
    """What `sops decrypt --extract` prints: str raw, other types as YAML plus a newline."""
    if leaf_type in ("str", "bytes"):
        return plaintext
    pattern = _TYPED.get(leaf_type)
    if pattern is None or not pattern.fullmatch(plaintext):
        raise IntegrityError(f"integrity check failed for {where}: value does not match its type")
    if leaf_type == "bool":
        return plaintext.lower() + b"\n"
    return plaintext + b"\n"


def _emit_recipients(members: Mapping[str, str]) -> bytes:
    lines = [
        "# Who can read this store: member name -> age (age1...) or ssh-ed25519 public key.",
        "# Change it with `devsecrets recipients add|rm`, which re-encrypts the store.",
    ]
    lines += [f"{name}: {sopsfile.yaml_scalar(key)}" for name, key in members.items()]
    return ("\n".join(lines) + "\n").encode()


def _read_capped(path: Path, limit: int, missing: Callable[[], StoreError]) -> bytes:
    """A store file's bytes: never through a symlink, only a regular file, at most `limit`
    bytes (anyone with push access can commit a symlink to /dev/zero or a 10 GB file)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except FileNotFoundError as e:
        raise missing() from e
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise IntegrityError(
                f"{path} is a symlink; devsecrets does not follow symlinks in the store",
                hint="restore it from git",
            ) from e
        if e.errno == errno.ENXIO:  # a socket cannot be opened
            raise IntegrityError(f"{path} is not a regular file") from e
        raise StoreError(f"cannot read {path}: {e.strerror}") from e
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise IntegrityError(f"{path} is not a regular file")
        chunks, total = [], 0
        while total <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as e:
        raise StoreError(f"cannot read {path}: {e.strerror}") from e
    finally:
        os.close(fd)
    if total > limit:
        raise IntegrityError(
            f"{path} is larger than any valid file of its kind ({limit} bytes)",
            hint="restore it from git",
        )
    return b"".join(chunks)


def _is_full_dir(path: Path) -> bool:
    """A directory (not a symlink to one) with something in it: `rm` cannot remove it."""
    try:
        if not stat.S_ISDIR(path.lstat().st_mode):
            return False
        with os.scandir(path) as entries:
            return any(True for _ in entries)
    except OSError:
        return False


def _lstat_at(name: str, dir_fd: int) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _lexists(path: Path) -> bool:
    return os.path.lexists(path)


def _shell_quote(text: str) -> str:
    return (
        text
        if re.fullmatch(r"[A-Za-z0-9_.@%+=:,/-]+", text)
        else "'" + text.replace("'", "'\\''") + "'"
    )


def _atomic_write(path: Path, data: bytes, *, sync_dir: bool = True) -> None:
    """Durable and atomic: a crash or a kill leaves the old file or the new one (the rename
    is durable once the directory is fsynced: here, or by the caller without `sync_dir`)."""
    with _os_errors("write", path):
        write_atomic(path, data, mode=0o644, durable=True, sync_dir=sync_dir)


@contextlib.contextmanager
def _os_errors(doing: str, path: Path) -> Iterator[None]:
    """An OSError on a store file, as a one-line StoreError naming the file."""
    try:
        yield
    except OSError as e:
        raise _os_error(doing, path, e) from e


def _os_error(doing: str, path: Path, error: OSError) -> StoreError:
    return StoreError(
        f"cannot {doing} {path}: {reason(error)}",
        hint="check the store's files and their permissions, or restore them from git",
    )
