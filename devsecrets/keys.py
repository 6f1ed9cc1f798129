"""Find the user's age identities the way sops 3.11 does (ARCHITECTURE.md, "The SOPS format").

Input: the environment. Output: `Identities` (private keys, never printed) plus the list of
places looked at, for the "no identity" message. All sources add up, as in sops.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyrage

from devsecrets.errors import NoIdentityError


@dataclass(slots=True)
class Identities:
    keys: list[Any] = field(default_factory=list)  # pyrage identities (pyrage has no types)
    public: list[str] = field(default_factory=list)  # recipients we can derive (for init)
    tried: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    # (public key or None when it cannot be derived, where the identity was found), per key
    origins: list[tuple[str | None, str]] = field(default_factory=list)

    def __repr__(self) -> str:  # never show key material
        return f"Identities({len(self.keys)} keys from {', '.join(self.tried)})"

    def require(self) -> Identities:
        if not self.keys:
            where = ", ".join(self.tried)
            extra = f" ({'; '.join(self.problems)})" if self.problems else ""
            raise NoIdentityError(
                f"no age identity found; looked in {where}{extra}",
                hint="run `devsecrets init` to create one, or set SOPS_AGE_KEY_FILE",
            )
        return self


def default_key_file(env: Mapping[str, str]) -> Path:
    """sops' default: <UserConfigDir>/sops/age/keys.txt (Go os.UserConfigDir)."""
    xdg = env.get("XDG_CONFIG_HOME")
    if xdg:
        return Path(xdg) / "sops" / "age" / "keys.txt"
    home = Path(env.get("HOME") or Path.home())
    if sys.platform == "darwin":
        return home / "Library" / "Application Support" / "sops" / "age" / "keys.txt"
    return home / ".config" / "sops" / "age" / "keys.txt"


def find_identities(env: Mapping[str, str]) -> Identities:
    found = Identities()
    home = Path(env.get("HOME") or Path.home())
    ssh_file = env.get("SOPS_AGE_SSH_PRIVATE_KEY_FILE")
    found.tried.append("SOPS_AGE_SSH_PRIVATE_KEY_FILE")
    if ssh_file:
        _load_ssh(Path(ssh_file), found)
    for name in ("id_ed25519", "id_rsa"):
        path = home / ".ssh" / name
        found.tried.append(str(path))
        if path.is_file():
            _load_ssh(path, found)
    found.tried.append("SOPS_AGE_KEY")
    if env.get("SOPS_AGE_KEY"):
        _load_age_text(env["SOPS_AGE_KEY"], "SOPS_AGE_KEY", found)
    found.tried.append("SOPS_AGE_KEY_FILE")
    if env.get("SOPS_AGE_KEY_FILE"):
        _load_age_file(Path(env["SOPS_AGE_KEY_FILE"]), found)
    found.tried.append("SOPS_AGE_KEY_CMD")
    if env.get("SOPS_AGE_KEY_CMD"):
        _load_age_cmd(env["SOPS_AGE_KEY_CMD"], env, found)
    default = default_key_file(env)
    found.tried.append(str(default))
    if default.is_file():
        _load_age_file(default, found)
    return found


def _load_age_file(path: Path, found: Identities) -> None:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        found.problems.append(f"{path}: {e.__class__.__name__}")
        return
    _load_age_text(text, str(path), found)


def _load_age_cmd(command: str, env: Mapping[str, str], found: Identities) -> None:
    import shlex
    import subprocess  # only here: `get` starts faster without it

    try:
        out = subprocess.run(  # noqa: S603 - the user's own configured command, as sops runs it
            shlex.split(command), capture_output=True, env=dict(env), check=True, timeout=60
        )
    except (OSError, subprocess.SubprocessError, ValueError):
        found.problems.append("SOPS_AGE_KEY_CMD failed")
        return
    _load_age_text(out.stdout.decode(errors="replace"), "SOPS_AGE_KEY_CMD", found)


def _load_age_text(text: str, source: str, found: Identities) -> None:
    if text.lstrip().startswith(("age-encryption.org", "-----BEGIN AGE")):
        found.problems.append(f"{source} is passphrase-protected, which devsecrets cannot read")
        return
    for line in text.splitlines():
        # sops 3.13 also accepts several keys on one line, separated by spaces.
        for word in line.split() if not line.lstrip().startswith("#") else []:
            if not word.startswith("AGE-SECRET-KEY-1"):
                if word.startswith("AGE-"):
                    found.problems.append(f"{source}: unsupported identity type")
                continue
            try:
                identity = pyrage.x25519.Identity.from_str(word)
            except pyrage.IdentityError:
                found.problems.append(f"{source}: malformed AGE-SECRET-KEY line")
                continue
            found.keys.append(identity)
            found.public.append(str(identity.to_public()))
            found.origins.append((found.public[-1], source))


def _load_ssh(path: Path, found: Identities) -> None:
    try:
        identity = pyrage.ssh.Identity.from_buffer(path.read_bytes())
    except (OSError, pyrage.IdentityError, ValueError):
        found.problems.append(f"{path}: unreadable or passphrase-protected ssh key")
        return
    found.keys.append(identity)
    pub = path.with_name(path.name + ".pub")
    public = None
    if path.name != "id_rsa" and pub.is_file():
        public = " ".join(pub.read_text().split()[:2])
        found.public.append(public)
    found.origins.append((public, str(path)))


def create_key_file(path: Path, now: str) -> str:
    """Write a fresh X25519 identity (0600, never over an existing file); return its recipient."""
    identity = pyrage.x25519.Identity.generate()
    public = str(identity.to_public())
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(f"# created: {now}\n# public key: {public}\n{identity}\n")
    return public
