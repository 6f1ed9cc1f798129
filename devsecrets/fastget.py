"""The lean `devsecrets get`: the command scripts call most, where start-up is most of the time.

Input: store directory option, names, the environment. Output: the values, or None to say
"take the full path". It imports only os/sys, pyrage and cryptography's AES-GCM (plus hashlib
for the MAC): no click, no PyYAML, no pathlib, no dataclasses. It handles only the common case:
files in the exact layout devsecrets writes (`fastlayout`), X25519 or ssh-ed25519 key files,
`type:str` values that decrypt and authenticate. Anything else, including every error, returns
None and the caller runs the full reader, which then says precisely what is wrong. So this
path may refuse more than the full reader but never accepts anything it would refuse:
tests/test_fastget.py runs both on the same stores and compares.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # not `typing.TYPE_CHECKING`: importing typing costs start-up time
if TYPE_CHECKING:
    from collections.abc import Mapping

STORE_DIR = ".devsecrets"
SUFFIX = ".sops.yaml"
# Stricter than the store's own cap: a bigger file simply takes the full path.
_MAX_FILE = 1 << 20
_MAX_KEY_FILE = 1 << 16


def read_values(
    store_option: str | None, names: list[str], env: Mapping[str, str] | None = None
) -> dict[str, bytes] | None:
    """Every name's value, or None when any of them needs the full reader. `env`: where the
    keys are found (default: this process's environment)."""
    if not names or not all(_simple_name(n) for n in names):
        return None
    root = _find_store(store_option)
    # An interrupted `recipients rm` (store.journal's file): the full path warns about it.
    if root is None or os.path.lexists(os.path.join(root, ".journal")):
        return None
    identities = _identities(os.environ if env is None else env)
    if not identities:
        return None
    values: dict[str, bytes] = {}
    for name in names:
        text = _read_file(os.path.join(root, name + SUFFIX), _MAX_FILE)
        if text is None:
            return None
        value = _open(text, name, identities)
        if value is None:
            return None
        values[name] = value
    return values


def json_mapping(values: dict[str, bytes]) -> bytes:
    """`get --json`: name -> the value as a string when it is UTF-8, else {"base64": "..."}."""
    import json

    out: dict[str, object] = {}
    for name, value in values.items():
        try:
            out[name] = value.decode("utf-8")
        except UnicodeDecodeError:
            import base64

            out[name] = {"base64": base64.b64encode(value).decode()}
    return (json.dumps(out, indent=2) + "\n").encode()


def _simple_name(name: str) -> bool:
    from devsecrets.fastlayout import _is_name

    return _is_name(name) and not name.endswith("_unencrypted")


def _find_store(option: str | None) -> str | None:
    """Like `store.find_store`, but only for a real directory holding recipients.yaml."""
    if option:
        candidates = [option]
    else:
        here = os.getcwd()
        candidates = []
        while True:
            candidates.append(os.path.join(here, STORE_DIR))
            parent = os.path.dirname(here)
            if parent == here:
                break
            here = parent
    import stat

    for candidate in candidates:
        try:
            if stat.S_ISREG(os.lstat(os.path.join(candidate, "recipients.yaml")).st_mode):
                return candidate if stat.S_ISDIR(os.lstat(candidate).st_mode) else None
        except OSError:
            continue
    return None


def _read_file(path: str, cap: int) -> bytes | None:
    """A regular file's bytes, opened without following a symlink; None otherwise."""
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > cap:
            return None
        data = os.read(fd, cap + 1)
        return data if len(data) <= cap else None
    except OSError:
        return None
    finally:
        os.close(fd)


def _identities(env: Mapping[str, str]) -> list[object] | None:
    """The identities `keys.find_identities` would load, or None when it would do more than
    read files (a key command) or report a problem with one of them."""
    import pyrage

    if env.get("SOPS_AGE_KEY_CMD") or sys.platform != "linux":
        return None
    home = env.get("HOME") or os.path.expanduser("~")
    found: list[object] = []
    ssh = [env.get("SOPS_AGE_SSH_PRIVATE_KEY_FILE") or None]
    ssh += [os.path.join(home, ".ssh", n) for n in ("id_ed25519", "id_rsa")]
    for i, path in enumerate(ssh):
        if path is None or (i and not os.path.isfile(path)):
            continue
        data = _read_file(path, _MAX_KEY_FILE)
        if data is None:
            return None
        try:
            found.append(pyrage.ssh.Identity.from_buffer(data))
        except Exception:  # noqa: BLE001 - the full path reports it
            return None
    texts = [env.get("SOPS_AGE_KEY") or ""]
    xdg = env.get("XDG_CONFIG_HOME")
    default = os.path.join(xdg or os.path.join(home, ".config"), "sops", "age", "keys.txt")
    for path in (env.get("SOPS_AGE_KEY_FILE"), default):
        if path and (path != default or os.path.isfile(path)):
            data = _read_file(path, _MAX_KEY_FILE)
            if data is None:
                return None
            texts.append(data.decode("utf-8", errors="strict") if data.isascii() else "\0")
    for text in texts:
        if "\0" in text or text.lstrip().startswith(("age-encryption.org", "-----BEGIN AGE")):
            return None
        for line in text.splitlines():
            if line.lstrip().startswith("#"):
                continue
            for word in line.split():
                if word.startswith("AGE-SECRET-KEY-1"):
                    try:
                        found.append(pyrage.x25519.Identity.from_str(word))
                    except Exception:  # noqa: BLE001 - the full path reports it
                        return None
                elif word.startswith("AGE-"):
                    return None
    return found


def _open(text: bytes, name: str, identities: list[object]) -> bytes | None:
    opened = open_document(text, name, identities)
    return None if opened is None else opened[0]


def open_document(
    text: bytes, name: str, identities: list[object]
) -> tuple[bytes, dict[str, object]] | None:
    """The plaintext and the file's `sops` metadata (`fastlayout.parse`), or None."""
    from devsecrets.fastlayout import parse

    tree = parse(text)
    if tree is None or name not in tree:
        return None
    meta: dict[str, object] = tree["sops"]  # type: ignore[assignment]
    stamp = str(meta["lastmodified"])
    if not _real_time(stamp):
        return None
    key = _unwrap(meta["age"], identities)  # type: ignore[arg-type]
    if key is None:
        return None
    value = str(tree[name])
    try:
        plaintext = b"" if value == "" else _decrypt(key, value, f"{name}:".encode())
        mac = _decrypt(key, str(meta["mac"]), stamp.encode())
    except Exception:  # noqa: BLE001 - does not authenticate: the full path says so
        return None
    if plaintext is None or mac is None:
        return None
    import hashlib
    import hmac

    if not hmac.compare_digest(mac, hashlib.sha512(plaintext).hexdigest().upper().encode()):
        return None
    return plaintext, meta


def _unwrap(stanzas: list[dict[str, str]], identities: list[object]) -> bytes | None:
    import pyrage

    for stanza in stanzas:
        try:
            key = pyrage.decrypt(stanza["enc"].encode(), identities)
        except Exception:  # noqa: BLE001, S112 - as store.age.unwrap: try the next stanza
            continue
        if len(key) == 32:
            return bytes(key)
    return None


def _decrypt(key: bytes, leaf: str, aad: bytes) -> bytes | None:
    """A `type:str` ENC[...] leaf (as `store.cipher`), or None for any other type."""
    import binascii

    parts = leaf[len("ENC[AES256_GCM,") : -1].split(",")
    if len(parts) != 4:
        return None
    fields = [p.partition(":") for p in parts]
    if [f[0] for f in fields] != ["data", "iv", "tag", "type"] or fields[3][2] != "str":
        return None
    if not all(f[2] for f in fields):
        return None
    data, iv, tag = (binascii.a2b_base64(f[2], strict_mode=True) for f in fields[:3])
    if len(tag) != 16 or not iv:
        return None
    return bytes(_aesgcm()(key).decrypt(iv, data + tag, aad))


def _aesgcm() -> type:
    """cryptography's AESGCM, without importing every cipher module its package loads."""
    try:
        from cryptography.hazmat.bindings._rust import openssl

        cls: type = openssl.aead.AESGCM
    except (ImportError, AttributeError):
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        cls = AESGCM
    return cls


_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _real_time(stamp: str) -> bool:
    """The calendar check `datetime.fromisoformat` makes in the full reader."""
    year, month, day = int(stamp[0:4]), int(stamp[5:7]), int(stamp[8:10])
    hour, minute, second = int(stamp[11:13]), int(stamp[14:16]), int(stamp[17:19])
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    days = 28 + leap if month == 2 else _DAYS[month - 1] if 1 <= month <= 12 else 0
    return year >= 1 and 1 <= day <= days and hour < 24 and minute < 60 and second < 60
