"""The lean `devsecrets set NAME` (value on stdin): where h9live's latency and scripts wait.

Same shape as `fastget`: it imports only os/sys, json, hashlib, pyrage and cryptography's
AES-GCM (no click, no PyYAML, no pathlib, no dataclasses), and handles only the common case:
a store whose recipients.yaml and secret file are in the exact layout devsecrets writes
(`fastlayout`), age X25519 recipients all approved by this user with nothing new to record,
and a file that either does not exist or opens with this user's keys. Anything else returns
None and the caller hands the value to the full store (`Store.write_many`), which then does
the write or says precisely what is wrong. So this path may decline more than the store but
never writes what the store would refuse: tests/test_fastset.py runs both on the same stores.

What it keeps from the store's write path, each checked by a test: the writers' lock (a
regular file opened without following a symlink, flock'ed, temp files of killed writers
removed), the approvals check under the lock, the durable atomic write (`atomic.write_at`:
the file fsynced before its rename; the directory fsynced after the lock is released, as
`Store._writing`, so a watcher waiting for the lock reads the new file at once),
a fresh data key for every new value, `unchanged` when value and recipients are the same.
"""

from __future__ import annotations

import os

from devsecrets.fastget import SUFFIX, _find_store, _identities, _read_file, _simple_name

LOCK_FILE = ".lock"  # as store.LOCK_FILE
RECIPIENTS_FILE = "recipients.yaml"
SOPS_VERSION = "3.11.0"  # as store.sopsfile.SOPS_VERSION (tests/test_fastset.py compares)
MAX_VALUE_SIZE = 500 * 1024 - 1  # as store.MAX_VALUE_SIZE (compared by the same test)
MAX_RECIPIENTS = 256  # as store.MAX_RECIPIENTS (compared by the same test)
_MAX_RECIPIENTS_FILE = 1 << 16
_MAX_FILE = 1 << 20
_MAX_RECORD = 1 << 20


class Plan:
    """What `prepare` found before the value is read: the store and this user's keys."""

    def __init__(self, root: str, name: str, identities: list[object], env: dict[str, str]):
        self.root, self.name, self.identities, self.env = root, name, identities, env


def prepare(store_option: str | None, name: str) -> Plan | None:
    """Before the value is read (the full path checks the recipients first too): None when
    the full path must run, which then reads the value itself."""
    if not _simple_name(name):
        return None
    root = _find_store(store_option)
    if root is None or os.path.lexists(os.path.join(root, ".journal")):
        return None
    env = dict(os.environ)
    identities = _identities(os.environ)
    if not identities or _members_if_approved(root, env) is None:
        return None
    return Plan(root, name, identities, env)


def write(plan: Plan, value: bytes) -> bool | None:
    """Store `value`: True when written, False when nothing had to change, None when the
    full store must do it (nothing was written; the lock is released)."""
    if len(value) > MAX_VALUE_SIZE:
        return None
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        lock = os.open(os.path.join(plan.root, LOCK_FILE), flags, 0o600)
    except OSError:
        return None
    written = False
    try:
        import fcntl
        import stat

        if not stat.S_ISREG(os.fstat(lock).st_mode):
            return None
        fcntl.flock(lock, fcntl.LOCK_EX)
        _clean_temp_files(plan.root)
        changed = _write_locked(plan, value)
        written = changed is True
        return changed
    finally:
        os.close(lock)
        if written:  # as `Store._writing`: the directory fsynced once the lock is released
            _sync_dir(plan.root)


def _sync_dir(root: str) -> None:
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:  # as the store's `_os_error`
        from devsecrets.errors import StoreError, reason

        raise StoreError(
            f"cannot write {root}: {reason(e)}",
            hint="check the store's files and their permissions, or restore them from git",
        ) from e


def _write_locked(plan: Plan, value: bytes) -> bool | None:
    members = _members_if_approved(plan.root, plan.env)  # again, under the lock
    if members is None:
        return None
    wanted = list(members.values())
    file_name = plan.name + SUFFIX
    path = os.path.join(plan.root, file_name)
    version = ""
    if os.path.lexists(path):
        text = _read_file(path, _MAX_FILE)
        if text is None:
            return None
        from devsecrets.fastget import open_document

        opened = open_document(text, plan.name, plan.identities)
        if opened is None:
            return None
        old, meta = opened
        have = [stanza["recipient"] for stanza in meta["age"]]  # type: ignore[attr-defined]
        if old == value and have == wanted:
            return False  # byte for byte as it is
        if old == value and set(have) <= set(wanted):
            return None  # the store keeps this data key for added members: its decision
        version = str(meta["version"])
    data = _seal(plan.name, value, wanted, version)
    if data is None:
        return None
    from devsecrets.atomic import write_at

    dir_fd = os.open(plan.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        write_at(dir_fd, file_name, data, mode=0o644, durable=True, sync_dir=False)
    finally:
        os.close(dir_fd)
    return True


def _seal(name: str, value: bytes, recipients: list[str], old_version: str) -> bytes | None:
    """As `store.seal` with a fresh data key: the file text, or None for a recipient that is
    not an age X25519 key (the store wraps those)."""
    import hashlib
    import time

    import pyrage

    from devsecrets.fastget import _aesgcm
    from devsecrets.fastlayout import emit

    key = os.urandom(32)
    stanzas = []
    for recipient in recipients:
        text = recipient.strip()
        if not text.startswith("age1"):
            return None
        try:
            armored = pyrage.encrypt(key, [pyrage.x25519.Recipient.from_str(text)], armored=True)
        except Exception:  # noqa: BLE001 - the store says what is wrong with the key
            return None
        stanzas.append((text, armored.decode()))
    aead = _aesgcm()(key)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    leaf = "" if value == b"" else _leaf(aead, value, f"{name}:".encode())
    mac = _leaf(aead, hashlib.sha512(value).hexdigest().upper().encode(), now.encode())
    return emit(name, leaf, stanzas, now, mac, _newer_version(old_version))


def _leaf(aead: object, plaintext: bytes, aad: bytes) -> str:
    """A `type:str` ENC[...] leaf under a fresh 32-byte nonce (as `store.cipher.encrypt`)."""
    from binascii import b2a_base64

    nonce = os.urandom(32)
    sealed = aead.encrypt(nonce, plaintext, aad)  # type: ignore[attr-defined]
    data, iv, tag = (
        b2a_base64(b, newline=False).decode() for b in (sealed[:-16], nonce, sealed[-16:])
    )
    return f"ENC[AES256_GCM,data:{data},iv:{iv},tag:{tag},type:str]"


def _newer_version(stored: str) -> str:
    """As `sopsfile.newer_version` for the versions `fastlayout` accepts (N.N.N)."""
    if not stored:
        return SOPS_VERSION
    theirs = tuple(int(x) for x in stored.split("."))
    ours = tuple(int(x) for x in SOPS_VERSION.split("."))
    return stored if theirs > ours else SOPS_VERSION


def _members_if_approved(root: str, env: dict[str, str]) -> dict[str, str] | None:
    """recipients.yaml's members when every key is in this user's approvals and the record
    already saw exactly these members (so `Approvals.check` would pass, note nothing and save
    nothing); else None."""
    from devsecrets.fastlayout import parse_recipients

    text = _read_file(os.path.join(root, RECIPIENTS_FILE), _MAX_RECIPIENTS_FILE)
    members = None if text is None else parse_recipients(text)
    if not members or len(members) > MAX_RECIPIENTS:
        return None
    record = _approvals(root, env)
    if record is None:
        return None
    approved, seen = record.get("approved"), record.get("seen")
    by_key = {key.strip(): member for member, key in members.items()}
    if not isinstance(approved, dict) or seen != by_key:
        return None
    if not all(key in approved for key in by_key):
        return None
    return members


def _approvals(root: str, env: dict[str, str]) -> dict[str, object] | None:
    """This user's approval record for the store at `root` (`store.trust.Approvals`)."""
    import hashlib
    import json

    home = env.get("HOME")
    base = env.get("XDG_CONFIG_HOME") or (os.path.join(home, ".config") if home else None)
    if not base:
        return None
    real = os.path.realpath(root)
    digest = hashlib.sha256(real.encode()).hexdigest()[:32]
    text = _read_file(os.path.join(base, "devsecrets", "approved", f"{digest}.json"), _MAX_RECORD)
    if text is None:
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _clean_temp_files(root: str) -> None:
    """As `Store._clean_temp_files`: remove the temp files (`atomic.TEMP_GLOB`, `.*.tmp-*`) a
    killed writer left, only files and symlinks, never followed."""
    try:
        entries = list(os.scandir(root))
    except OSError:
        return
    for entry in entries:
        if entry.name.startswith(".") and ".tmp-" in entry.name[1:]:
            try:
                if not entry.is_dir(follow_symlinks=False):
                    os.unlink(os.path.join(root, entry.name))
            except OSError:
                pass
