"""`set --from-file NAME=PATH …`: several secrets in one write, read whole by the watch."""

from __future__ import annotations

import fcntl
import os
import stat
import threading
import time
from pathlib import Path

import pytest
from conftest import User

from devsecrets.keys import find_identities
from devsecrets.store import LOCK_FILE, Store


def test_several_files_are_stored_together(alice: User, tmp_path: Path):
    (tmp_path / "cert.pem").write_bytes(b"CERT")
    (tmp_path / "key.pem").write_bytes(b"KEY\n")
    result = alice.run(
        "set", "--from-file", f"tls_cert={tmp_path}/cert.pem",
        "--from-file", f"tls_key={tmp_path}/key.pem",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert result.stderr.splitlines() == [
        "devsecrets: tls_cert: stored (4 bytes)",
        "devsecrets: tls_key: stored (4 bytes)",
    ]
    assert alice.run("get", "tls_cert").stdout == b"CERT"
    assert alice.run("get", "tls_key").stdout == b"KEY\n"
    again = alice.run("set", "--from-file", f"tls_cert={tmp_path}/cert.pem")
    assert again.stderr.splitlines() == ["devsecrets: tls_cert: unchanged (4 bytes)"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from-file", "cert.pem"], "--from-file cert.pem: expected NAME=PATH"),
        (["--from-file", "a=cert.pem", "--from-file", "a=cert.pem"], "a is given twice"),
        (["x", "--from-file", "cert.pem", "--from-file", "key.pem"], "need a name each"),
        (["--from-file", "a=missing.pem"], "cannot read missing.pem"),
        (["--from-file", "a=cert.pem", "--generate"], "either --from-file or --generate"),
        ([], "missing NAME"),
    ],
)
def test_bad_combinations_are_usage_errors_and_store_nothing(
    alice: User, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
):
    (tmp_path / "cert.pem").write_bytes(b"CERT")
    monkeypatch.chdir(tmp_path)
    result = alice.run("set", *args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert Store(alice.store).names() == []


def test_a_reader_waits_for_a_multi_secret_write(alice: User):
    """`settled` (the watch's read) never overlaps a writer: it sees both values or neither."""
    store = Store(alice.store)
    ids = find_identities(alice.env_for_core())
    store.write("a", b"1", ids)  # the lock file exists from now on
    in_write, release = threading.Event(), threading.Event()

    def writer() -> None:
        with store.lock():
            in_write.set()
            release.wait(10)

    thread = threading.Thread(target=writer)
    thread.start()
    assert in_write.wait(10)
    entered = threading.Event()

    def reader() -> None:
        with store.settled():
            entered.set()

    threading.Thread(target=reader).start()
    time.sleep(0.3)
    assert not entered.is_set(), "read while a writer held the lock"
    release.set()
    thread.join()
    assert entered.wait(5), "the reader never went ahead"


def test_the_directory_is_synced_after_the_lock_is_released(
    alice: User, monkeypatch: pytest.MonkeyPatch
):
    """A watcher waiting for the lock reads as soon as the files are renamed: the store
    directory's fsync (milliseconds on a disk) comes after the release, and still before
    `set` returns. Each file's own fsync comes before its rename, under the lock."""
    store = Store(alice.store)
    ids = find_identities(alice.env_for_core())
    store.write("a", b"0", ids)  # the lock file exists from now on
    synced: list[tuple[str, bool]] = []  # (file or dir, lock held)
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        kind = "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
        probe = os.open(alice.store / LOCK_FILE, os.O_RDONLY)
        try:
            fcntl.flock(probe, fcntl.LOCK_SH | fcntl.LOCK_NB)
            held = False
        except BlockingIOError:
            held = True
        finally:
            os.close(probe)
        synced.append((kind, held))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    store.write_many({"a": b"1", "b": b"1"}, ids)
    assert synced == [("file", True), ("file", True), ("dir", False)]
