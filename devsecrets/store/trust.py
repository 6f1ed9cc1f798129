"""Approvals: the recipients a member has agreed to encrypt to, remembered on their machine.

Input: the store directory, the environment, the member's own public keys, `recipients.yaml`.
Output: a `Review` (who was added or removed since the last approval) and a refusal for every
write that would encrypt to a key this user never approved.

The record lives outside the repository ($XDG_CONFIG_HOME or ~/.config, `devsecrets/approved/`),
one file per store, keyed by the store directory's real path: anything inside the repository
(a store id, say) is chosen by whoever can push, and would let them point one store at another
store's approvals. Moving or re-cloning a store therefore asks for one approval again.
Approved keys stay approved until this user removes them (`recipients rm`) themselves.
Never touches the repository; never holds private key material.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devsecrets.errors import RecipientError

RECORD_VERSION = 1
RECIPIENTS = "recipients.yaml"  # as in store/__init__, which imports this module


class UnapprovedRecipientsError(RecipientError):
    """recipients.yaml names keys this user has not approved; nothing was encrypted."""


@dataclass(frozen=True, slots=True)
class Change:
    name: str
    key: str
    commit: str | None  # "1a2b3c4 by Mallory, 2026-11-30" when git knows it

    def describe(self) -> str:
        where = f", {self.commit}" if self.commit else ""
        return printable(f"{self.name} ({short(self.key)}{where})")


@dataclass(frozen=True, slots=True)
class Review:
    first_use: bool
    added: tuple[Change, ...]  # not approved yet: writing needs `recipients approve`
    removed: tuple[Change, ...]  # reported once, need no approval

    def describe(self) -> str:
        parts = []
        if self.added:
            label = "recipients" if self.first_use else "added since your last approval"
            parts.append(f"{label}: " + ", ".join(c.describe() for c in self.added))
        if self.removed:
            parts.append("removed: " + ", ".join(c.describe() for c in self.removed))
        return "; ".join(parts)


def printable(text: str) -> str:
    """Names, keys and commit authors come from whoever pushed: no terminal control codes."""
    return "".join(c if c.isprintable() else "?" for c in text)


def short(key: str) -> str:
    return key if len(key) <= 20 else f"{key[:12]}…{key[-6:]}"


def config_dir(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME") or Path.home()) / ".config")
    return Path(base) / "devsecrets"


class Approvals:
    """One user's approvals for one store."""

    def __init__(
        self, store_root: Path, env: Mapping[str, str], own: Callable[[], Sequence[str]]
    ) -> None:
        self.store_root = store_root.resolve()
        digest = hashlib.sha256(str(self.store_root).encode()).hexdigest()[:32]
        self.path = config_dir(env) / "approved" / f"{digest}.json"
        self._own = own  # our own public keys, looked up only when a decision needs them

    @property
    def own(self) -> set[str]:
        return {k.strip() for k in self._own()}

    # -- the record ----------------------------------------------------------------------

    def _load(self) -> dict[str, Any] | None:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise RecipientError(
                f"cannot read your approvals {self.path}",
                hint="remove that file and run `devsecrets recipients approve`",
            ) from e
        if not isinstance(raw, dict) or not isinstance(raw.get("approved"), dict):
            raise RecipientError(f"{self.path} is not a devsecrets approval record")
        return raw

    def _save(self, approved: Mapping[str, str], seen: Mapping[str, str]) -> None:
        record = {
            "version": RECORD_VERSION,
            "store": str(self.store_root),
            "approved": dict(approved),
            "seen": dict(seen),
        }
        from devsecrets.atomic import write_atomic

        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        text = json.dumps(record, indent=2, sort_keys=True)
        write_atomic(self.path, text.encode(), mode=0o600, umask=False, durable=True)

    def approved(self) -> dict[str, str] | None:
        """key -> name as approved, or None when this user never approved this store."""
        record = self._load()
        return None if record is None else {str(k): str(v) for k, v in record["approved"].items()}

    # -- decisions -----------------------------------------------------------------------

    def review(self, members: Mapping[str, str]) -> Review:
        record = self._load()
        approved = {} if record is None else record["approved"]
        seen = {} if record is None else record.get("seen", {})
        own = self.own
        added = [
            (name, key.strip())
            for name, key in members.items()
            if key.strip() not in approved and key.strip() not in own
        ]
        current = {key.strip() for key in members.values()}
        removed = [(str(name), str(key)) for key, name in seen.items() if key not in current]
        return Review(
            first_use=record is None,
            added=tuple(Change(n, k, self._commit(k)) for n, k in added),
            removed=tuple(Change(n, k, self._commit(k)) for n, k in removed),
        )

    def check(self, members: Mapping[str, str]) -> Review:
        """Refuse unless every member is approved (or one of our own keys); note what we saw."""
        review = self.review(members)
        if review.added:
            if review.first_use:
                what = "you have not approved this store's recipients yet"
            else:
                what = "recipients.yaml lists recipients you have not approved"
            raise UnapprovedRecipientsError(
                f"{what}; nothing was encrypted ({review.describe()})",
                hint="make sure each of them should read every secret in this store, then run "
                "`devsecrets recipients approve`",
            )
        record = self._load() or {"approved": {}}
        if record.get("seen") != _by_key(members):
            self._save(record["approved"], _by_key(members))
        return review

    def accept(self, members: Mapping[str, str], revoked: Sequence[str] = ()) -> None:
        """This user approves exactly-these members now (approve, add, rm, creating a store)."""
        record = self._load() or {"approved": {}}
        approved = {k: v for k, v in record["approved"].items() if k not in revoked}
        approved.update(_by_key(members))
        self._save(approved, _by_key(members))

    def _commit(self, key: str) -> str | None:
        """The last commit that added or removed `key` in recipients.yaml, if git knows one:
        on this branch, else on any (during a merge it is on the branch being merged)."""
        for revs in (["HEAD"], ["--all"]):
            try:
                out = subprocess.run(
                    ["git", "-C", str(self.store_root), "log", "-1", *revs]
                    + ["--format=%h by %an, %ad", "--date=short", "-S", key]
                    + ["--", RECIPIENTS],
                    capture_output=True,
                    text=True,
                    timeout=30,
                    check=False,
                )
            except (OSError, subprocess.SubprocessError):
                return None
            if out.returncode != 0:
                return None
            if out.stdout.strip():
                return out.stdout.strip()
        return "not committed yet"


def _by_key(members: Mapping[str, str]) -> dict[str, str]:
    return {key.strip(): name for name, key in members.items()}
