"""`devsecrets edit`: the user's editor on a copy that lives only on tmpfs.

Input: store, name, editor command. Output: whether the store changed. The copy is 0600 in a
0700 directory of ours on tmpfs, locked for the edit's lifetime (so no cleanup by another
devsecrets removes it), and overwritten then removed in every case (editor failure, Ctrl-C,
SIGTERM, SIGHUP, SIGQUIT); no core dump can carry it. The store is written only if its file
did not change while the editor was open.
"""

from __future__ import annotations

import os
import shlex
import shutil
import stat
from collections.abc import Callable, Mapping
from pathlib import Path

from devsecrets import fdpath, process, runtime_dir
from devsecrets.errors import EditError, SecretNotFoundError
from devsecrets.keys import Identities
from devsecrets.store import MAX_VALUE_SIZE, Store, validate_name, validate_size
from devsecrets.suggest import closest


def editor_command(env: Mapping[str, str]) -> list[str]:
    for var in ("VISUAL", "EDITOR"):
        if env.get(var):
            return shlex.split(env[var])
    for fallback in ("vim", "nano", "vi"):
        if shutil.which(fallback):
            return [fallback]
    raise EditError("no editor found", hint="set $VISUAL or $EDITOR")


def edit_secret(
    store: Store,
    name: str,
    identities: Identities,
    editor: list[str],
    private_dir: Path,
    confirm_empty: Callable[[], bool],
    strip_newline: Callable[[], bool] = lambda: False,
    *,
    force: bool = False,
    create_near_miss: Callable[[str], bool] = lambda guess: False,
) -> bool:
    """Edit `name` (new if absent); returns True when the store was written. Unless `force`,
    refuses (ConcurrentChangeError) if the stored file changed while the editor was open.

    When the editor added a trailing newline the old value did not have (most do),
    `strip_newline()` decides whether it goes; by default it stays. A new name that is a
    near miss of a stored one (`db_pasword`) is a typo until `create_near_miss(guess)` says
    otherwise (by default: refused, with the did-you-mean)."""
    validate_name(name)
    with process.plaintext_guard():
        since = store.raw(name)  # before decrypting: a change after this point is noticed
        try:
            before = store.read(name, identities).value
        except SecretNotFoundError as e:
            guess = closest(name, store.names())
            if guess is not None and not create_near_miss(guess):
                e.hint = f"to create {name} anyway: `devsecrets set {name}`"
                raise
            identities.require()
            before = None
        after = _edited_copy(private_dir, name, before or b"", editor)
        if added_newline(before, after) and strip_newline():
            after = after[:-1]
        if after == before:
            return False
        if after == b"" and not confirm_empty():
            raise EditError("empty value; nothing stored")
        validate_size(after)
        if force:
            return store.write(name, after, identities)
        return store.write_unless_changed(name, after, identities, since)


def added_newline(before: bytes | None, after: bytes) -> bool:
    """The editor appended a newline the old value lacked. For a new secret, only a one-line
    value counts: a typed password, not a PEM file that should end in a newline."""
    if not after.endswith(b"\n") or after.endswith(b"\r\n"):
        return False
    if before is None:
        return after.count(b"\n") == 1 and len(after) > 1
    return not before.endswith(b"\n") and after[:-1] != b""


def _edited_copy(private_dir: Path, name: str, content: bytes, editor: list[str]) -> bytes:
    """Run the editor on a scratch copy; its bytes afterwards (the copy is gone by then)."""
    with runtime_dir.scratch_dir(private_dir, "edit-") as (directory, dir_fd):
        # the copy keeps the secret's name, so editors pick a sensible mode
        try:
            fd = os.open(name, fdpath.NEW_FILE, 0o600, dir_fd=dir_fd)
            with os.fdopen(fd, "wb") as out:
                out.write(content)
        except OSError as e:
            raise EditError(f"cannot write the copy in {directory}: {e.strerror}") from e
        try:
            returncode = process.run_editor([*editor, str(directory / name)])
        except OSError as e:
            raise EditError(f"could not start editor {editor[0]!r}: {e.strerror}") from e
        if returncode != 0:
            raise EditError(f"editor exited with code {returncode}; nothing stored")
        try:
            fd = os.open(name, fdpath.READ_FILE, dir_fd=dir_fd)
        except OSError as e:
            raise EditError(
                f"the editor left no file to read back ({e.strerror}); nothing stored"
            ) from e
        with os.fdopen(fd, "rb") as copy:
            if not stat.S_ISREG(os.fstat(copy.fileno()).st_mode):
                raise EditError("the edited copy is not a regular file; nothing stored")
            return copy.read(MAX_VALUE_SIZE + 2)  # validate_size refuses anything longer
