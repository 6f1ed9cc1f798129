"""The lean `set` (`fastset`): what it writes, the full store reads and sops decrypts; where
it declines, the full store decides, with the same result as the full CLI; it keeps the lock,
the approvals and the atomic write."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import User, run_sops
from test_fastget import CANARY, ENTRY, guard_probe

from devsecrets import fastset, store
from devsecrets.fastlayout import parse
from devsecrets.keys import find_identities
from devsecrets.store import Store, sopsfile


def lean_set(user: User, name: str, value: bytes, *, wait: bool = True):
    """`devsecrets set NAME` through the console script (the lean path first), value on stdin."""
    proc = subprocess.Popen(
        [*ENTRY, "--store", str(user.store), "set", name],
        env=user.subprocess_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    if not wait:
        return proc
    out, err = proc.communicate(value, timeout=60)
    assert CANARY not in out + err
    return proc.returncode, err.decode()


def read_full(user: User, name: str) -> bytes:
    return Store(user.store).read(name, find_identities(user.env_for_core())).value


def test_constants_agree_with_the_store():
    assert fastset.SOPS_VERSION == sopsfile.SOPS_VERSION
    assert fastset.MAX_VALUE_SIZE == store.MAX_VALUE_SIZE
    assert fastset.MAX_RECIPIENTS == store.MAX_RECIPIENTS
    assert fastset.LOCK_FILE == store.LOCK_FILE
    assert fastset.RECIPIENTS_FILE == store.RECIPIENTS_FILE


def test_what_the_lean_set_writes_the_store_and_sops_read(alice: User):
    assert lean_set(alice, "a", CANARY) == (0, "devsecrets: a: stored (19 bytes)\n")
    assert lean_set(alice, "empty", b"") == (0, "devsecrets: empty: stored (0 bytes)\n")
    assert read_full(alice, "a") == CANARY
    assert read_full(alice, "empty") == b""
    path = alice.store / "a.sops.yaml"
    text = path.read_bytes()
    assert sopsfile.emit(sopsfile.parse(text, "a")) == text  # the store's own layout
    assert parse(text) is not None
    assert oct(path.stat().st_mode & 0o777) == oct(0o644 & ~_umask())
    result = run_sops(alice, "decrypt", "--extract", '["a"]', str(path))
    assert (result.returncode, result.stdout) == (0, CANARY), result.stderr
    assert CANARY not in text


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_the_lean_set_runs_without_click_and_turns_core_dumps_off(alice: User):
    alice.run("set", "a", input=b"old")
    assert guard_probe(alice, "set", "a", stdin=CANARY) == ["0", "0", "False", "0"]
    assert read_full(alice, "a") == CANARY


def test_the_same_value_is_unchanged_and_a_new_one_gets_a_fresh_data_key(alice: User):
    lean_set(alice, "a", CANARY)
    path = alice.store / "a.sops.yaml"
    before = path.read_bytes()
    assert lean_set(alice, "a", CANARY) == (0, "devsecrets: a: unchanged (19 bytes)\n")
    assert path.read_bytes() == before
    lean_set(alice, "a", b"other")
    after = parse(path.read_bytes())
    assert after is not None and parse(before) is not None
    old_stanza = parse(before)["sops"]["age"][0]["enc"]  # type: ignore[index]
    assert after["sops"]["age"][0]["enc"] != old_stanza  # type: ignore[index]
    assert read_full(alice, "a") == b"other"


def test_a_newer_sops_version_in_the_file_is_kept(alice: User):
    alice.run("set", "a", input=b"old")
    path = alice.store / "a.sops.yaml"
    path.write_bytes(path.read_bytes().replace(b"version: 3.11.0", b"version: 3.99.1"))
    lean_set(alice, "a", b"new")
    assert b"version: 3.99.1\n" in path.read_bytes()


def test_the_writers_lock_is_held(alice: User):
    """A writer holding the store's lock keeps the lean set waiting."""
    alice.run("set", "a", input=b"old")
    lock = os.open(alice.store / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        proc = lean_set(alice, "a", CANARY, wait=False)
        proc.stdin.write(CANARY)  # type: ignore[union-attr]
        proc.stdin.close()  # type: ignore[union-attr]
        time.sleep(1.5)
        assert proc.poll() is None, "set did not wait for the lock"
        assert read_full(alice, "a") == b"old"
    finally:
        os.close(lock)
    assert proc.wait(timeout=60) == 0
    assert read_full(alice, "a") == CANARY


def test_temp_files_of_a_killed_writer_are_removed_and_a_planted_lock_symlink_declines(
    alice: User, tmp_path: Path
):
    alice.run("set", "a", input=b"old")
    stale = alice.store / ".a.sops.yaml.tmp-123-abcd"
    stale.write_bytes(b"half")
    assert lean_set(alice, "a", CANARY)[0] == 0
    assert not stale.exists()
    (alice.store / ".lock").unlink()
    target = tmp_path / "elsewhere"
    (alice.store / ".lock").symlink_to(target)
    code, err = lean_set(alice, "a", b"new")  # the full store refuses, as the full CLI
    assert code == 1 and "symlink" in err
    assert not target.exists()
    assert read_full(alice, "a") == CANARY


def _unapproved(alice: User, bob: User) -> None:
    with (alice.store / "recipients.yaml").open("a") as f:
        f.write(f"bob: {bob.public_key()}\n")


def _ssh_recipient(alice: User, bob: User) -> None:
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHn4/6d3J2fUqXjT0v1xqz6a2J6Zx4hC1aVb3kE5s7Q5 b"
    with (alice.store / "recipients.yaml").open("a") as f:
        f.write(f'carol: "{key}"\n')


def _tampered(alice: User, bob: User) -> None:
    path = alice.store / "a.sops.yaml"
    path.write_bytes(
        path.read_bytes().replace(b"ENC[AES256_GCM,data:", b"ENC[AES256_GCM,data:A", 1)
    )


def _symlinked(alice: User, bob: User) -> None:
    path = alice.store / "a.sops.yaml"
    target = alice.store.parent / "outside.sops.yaml"
    target.write_bytes(path.read_bytes())
    path.unlink()
    path.symlink_to(target)


def _journal(alice: User, bob: User) -> None:
    (alice.store / ".journal").write_text("{}")


def _approval_revoked(alice: User, bob: User) -> None:
    """bob is in recipients.yaml and in the record's `seen`, but no longer `approved`."""
    import json

    _unapproved(alice, bob)
    assert alice.run("recipients", "approve", "--yes").exit_code == 0
    (record,) = (alice.home / ".config" / "devsecrets" / "approved").iterdir()
    data = json.loads(record.read_text())
    del data["approved"][bob.public_key()]
    record.write_text(json.dumps(data))


def _approvals_gone(alice: User, bob: User) -> None:
    for record in (alice.home / ".config" / "devsecrets" / "approved").iterdir():
        record.unlink()


def _foreign_file(alice: User, bob: User) -> None:
    """A file only bob can open (bob wrote it when he was the only recipient)."""
    path = alice.store / "a.sops.yaml"
    path.write_bytes(store.seal("a", b"bobs", [bob.public_key()]))


@pytest.mark.parametrize(
    "how",
    [
        _unapproved,
        _approval_revoked,
        _ssh_recipient,
        _tampered,
        _symlinked,
        _journal,
        _approvals_gone,
        _foreign_file,
    ],
)
def test_where_the_lean_set_declines_the_result_is_the_full_clis(
    tmp_path: Path, alice: User, bob: User, how
):
    """The full CLI, then (store and approvals restored) the console script: same result."""
    import shutil

    alice.run("set", "a", input=b"old")
    how(alice, bob)
    config = alice.home / ".config" / "devsecrets"
    saved = tmp_path / "saved"
    shutil.copytree(alice.project, saved / "project", symlinks=True)
    if config.exists():
        shutil.copytree(config, saved / "config", symlinks=True)

    def restore() -> None:
        shutil.rmtree(alice.project)
        shutil.copytree(saved / "project", alice.project, symlinks=True)
        shutil.rmtree(config, ignore_errors=True)
        if (saved / "config").exists():
            shutil.copytree(saved / "config", config, symlinks=True)

    expected = alice.run("set", "a", input=CANARY)
    restore()
    code, err = lean_set(alice, "a", CANARY)
    assert (code, err) == (expected.exit_code, expected.stderr), how.__name__
    path = alice.store / "a.sops.yaml"
    if expected.exit_code != 0:
        assert path.read_bytes() == (saved / "project" / ".devsecrets" / "a.sops.yaml").read_bytes()
    else:
        assert read_full(alice, "a") == CANARY


def test_a_member_added_with_the_same_value_is_the_stores_decision(alice: User, bob: User):
    """Same value, one approved member more (recipients.yaml edited, not re-encrypted): the
    store keeps the data key and adds a stanza; the lean path hands over to it."""
    alice.run("set", "a", input=CANARY)
    _unapproved(alice, bob)
    assert alice.run("recipients", "approve", "--yes").exit_code == 0
    before = parse((alice.store / "a.sops.yaml").read_bytes())
    assert before is not None and len(before["sops"]["age"]) == 1  # type: ignore[index, arg-type]
    assert lean_set(alice, "a", CANARY) == (0, "devsecrets: a: stored (19 bytes)\n")
    after = parse((alice.store / "a.sops.yaml").read_bytes())
    assert after is not None and len(after["sops"]["age"]) == 2  # type: ignore[index, arg-type]
    assert after["sops"]["age"][0] == before["sops"]["age"][0]  # type: ignore[index]
    assert read_full(bob, "a") == CANARY


def test_a_value_over_the_limit_is_refused_like_the_full_cli(alice: User):
    big = b"x" * (store.MAX_VALUE_SIZE + 1)
    code, err = lean_set(alice, "a", big)
    assert code == alice.run("set", "a", input=big).exit_code == 2
    assert "Swarm's limit" in err
    assert not (alice.store / "a.sops.yaml").exists()


def test_other_shapes_go_to_the_full_cli(alice: User):
    """--generate, --from-file, a missing name: not the lean path (click parses them)."""
    proc = subprocess.run(
        [*ENTRY, "--store", str(alice.store), "set", "g", "--generate"],
        env=alice.subprocess_env(),
        capture_output=True,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert len(read_full(alice, "g")) == 32
    assert sys.executable  # the ENTRY interpreter
