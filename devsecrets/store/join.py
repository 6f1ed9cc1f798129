"""Membership: who you are in a store, and join requests a newcomer commits for a member.

Input: identities, a store. Output: `Me` rows and `JoinRequest`s. A request is only a public key
in `.devsecrets/requests/NAME.pub`; anyone who can push can write one, so it grants nothing by
itself: a member approves it by name (`devsecrets recipients add NAME`) after checking the key.
Never reads or writes private key material.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from devsecrets.errors import RecipientError, StoreError
from devsecrets.keys import Identities
from devsecrets.store import (
    Progress,
    Store,
    _atomic_write,
    _read_capped,
    _unique,
    _validate_member,
    age,
    init_store,
)
from devsecrets.store.trust import Approvals

REQUESTS_DIR = "requests"
REQUEST_SUFFIX = ".pub"


@dataclass(frozen=True, slots=True)
class Me:
    names: tuple[str, ...]  # recipient names this key has in the store (empty: not a member)
    public: str | None
    source: str


@dataclass(frozen=True, slots=True)
class JoinRequest:
    name: str
    key: str
    path: Path


def whoami(identities: Identities, members: Mapping[str, str] | None) -> list[Me]:
    """One row per identity found: the names it has in the store, its public key, its source."""
    by_key: dict[str, list[str]] = {}
    for name, key in (members or {}).items():
        by_key.setdefault(key.strip(), []).append(name)
    return [
        Me(tuple(by_key.get(public or "", ())), public, source)
        for public, source in identities.origins
    ]


def requests(store: Store) -> list[JoinRequest]:
    directory = store.root / REQUESTS_DIR
    if not directory.is_dir() or directory.is_symlink():
        return []
    found = []
    for path in sorted(directory.iterdir()):
        if not path.name.endswith(REQUEST_SUFFIX) or not path.is_file() or path.is_symlink():
            continue
        try:
            key = _read_capped(path, 4096, lambda: StoreError("gone")).decode(errors="replace")
        except StoreError:
            continue  # not a regular file, too big, or gone: not a request
        key = key.strip()
        found.append(JoinRequest(path.name[: -len(REQUEST_SUFFIX)], key, path))
    return found


def find_request(store: Store, name: str) -> JoinRequest:
    for request in requests(store):
        if request.name == name:
            return request
    path = store.root / REQUESTS_DIR / (name + REQUEST_SUFFIX)
    if "/" not in name and (path.is_symlink() or (path.exists() and not path.is_file())):
        what = "a symlink" if path.is_symlink() else "not a regular file"
        raise RecipientError(
            f"the join request {path} is {what}; refusing to read it",
            hint=f"delete it (`git rm {path}`), ask {name} to run `devsecrets init` again and "
            f"push; or pass their public key: `devsecrets recipients add {name} KEY`",
        )
    raise RecipientError(
        f"no join request from {name!r} in {store.root / REQUESTS_DIR}",
        hint=f"ask {name} to run `devsecrets init` and push, then pull; "
        f"or pass their public key: `devsecrets recipients add {name} KEY`",
    )


def request_to_join(store: Store, member: str, public: str) -> JoinRequest:
    """Record (or keep) a join request for `public`; the name is unique among members."""
    age.parse_recipient(public)
    for request in requests(store):
        if request.key == public.strip():
            return request
    members = store.recipients()
    taken = {**members, **{r.name: r.key for r in requests(store)}}
    name = _unique(member, taken)
    _validate_member(name)
    directory = store.root / REQUESTS_DIR
    directory.mkdir(mode=0o755, exist_ok=True)
    if directory.is_symlink():
        raise RecipientError(f"{directory} is a symlink; refusing to write through it")
    path = directory / (name + REQUEST_SUFFIX)
    _atomic_write(path, (public.strip() + "\n").encode())
    return JoinRequest(name, public.strip(), path)


def remove_request(request: JoinRequest) -> None:
    if request.path.is_file() and not request.path.is_symlink():
        os.unlink(request.path)


@dataclass(frozen=True, slots=True)
class Joined:
    store: Store
    created: bool  # a new store, with you as its first member
    member: bool  # you are a recipient (now or already)
    request: JoinRequest | None  # the request you commit and push, when you are not


def init_or_join(
    root: Path, member: str, public: str, approvals: Approvals | None = None
) -> Joined:
    """Create the store with you as its member, or, in someone else's store, ask to join."""
    store, created = init_store(root, member, public)
    store.approvals = approvals
    if created and approvals is not None:
        approvals.accept(store.recipients())  # you made it: you approve yourself
    if public.strip() in {k.strip() for k in store.recipients().values()}:
        return Joined(store, created, True, None)
    return Joined(store, False, False, request_to_join(store, member, public))


@dataclass(frozen=True, slots=True)
class Added:
    name: str
    key: str
    secrets: tuple[str, ...]  # everything the newcomer can now read
    from_request: bool


def add_member(
    store: Store,
    name: str,
    key: str | None,
    identities: Identities,
    progress: Progress | None = None,
) -> Added:
    """`recipients add NAME [KEY]`: approve NAME's join request, or add the key given."""
    request = find_request(store, name) if key is None else None
    chosen = request.key if request is not None else (key or "")
    store.add_recipient(name, chosen, identities, progress)
    for pending in requests(store):  # the request is settled, whichever way the key came
        if pending.key == chosen.strip():
            remove_request(pending)
    return Added(name, chosen.strip(), tuple(store.names()), request is not None)
