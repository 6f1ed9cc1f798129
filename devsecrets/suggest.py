"""Did-you-mean for names: a typo of an existing secret should point at it, not at creating
a new one. Pure: names in, at most one name out."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def closest(name: str, known: Iterable[str]) -> str | None:
    """The known name `name` most likely misspells, or None (an exact match is not a typo)."""
    candidates = [k for k in known if k != name]
    matches = difflib.get_close_matches(name, candidates, n=1, cutoff=0.75)
    if matches:
        return matches[0]
    folded = {k.lower(): k for k in candidates}  # DB_PASSWORD for db_password
    return folded.get(name.lower())


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """ "; did you mean 'x'?" or "", to append to a "no secret 'name'" message."""
    match = closest(name, known)
    return f"; did you mean {match!r}?" if match else ""
