"""`set NAME` on a terminal: the value is asked twice, hidden. Two entries that differ store
nothing, in one `devsecrets: error:` line (exit 1); an empty value is stored, as from a pipe."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import subprocess
import termios
import time

import pytest
from conftest import User, devsecrets_cmd

CANARY = b"canary-tty-set-5e1d"


def _controlling_terminal() -> None:
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def set_on_a_terminal(user: User, answers: list[bytes]) -> tuple[int, bytes]:
    """`devsecrets set db_password` with a pty as its terminal; each prompt gets an answer."""
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [*devsecrets_cmd(), "--store", str(user.store), "set", "db_password"],
        env=user.subprocess_env(),
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        preexec_fn=_controlling_terminal,  # getpass opens /dev/tty and turns echo off
    )
    os.close(secondary)
    output, pending = b"", list(answers)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if not select.select([primary], [], [], 0.2)[0]:
            if proc.poll() is not None:
                break
            continue
        try:
            chunk = os.read(primary, 4096)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
        if pending and output.rstrip().endswith(b":"):
            os.write(primary, pending.pop(0) + b"\n")
            output += b"|"  # the next prompt must come after this answer
    os.close(primary)
    try:
        return proc.wait(timeout=30), output
    finally:
        if proc.poll() is None:
            proc.kill()


def test_two_different_entries_store_nothing_in_one_line(alice: User):
    code, output = set_on_a_terminal(alice, [CANARY, CANARY + b"x"])
    assert code == 1
    assert b"devsecrets: error: the two values typed do not match; nothing stored" in output
    assert b"Error:" not in output
    assert CANARY not in output
    assert not (alice.store / "db_password.sops.yaml").exists()


def test_matching_entries_are_stored(alice: User):
    code, output = set_on_a_terminal(alice, [CANARY, CANARY])
    assert code == 0, output.decode(errors="replace").replace(CANARY.decode(), "<canary>")
    assert CANARY not in output
    assert alice.run("get", "db_password").stdout == CANARY


@pytest.mark.parametrize("answers", [[b"", b""]], ids=["empty"])
def test_an_empty_value_is_stored_as_from_a_pipe(alice: User, answers: list[bytes]):
    code, output = set_on_a_terminal(alice, answers)
    assert code == 0, output
    assert b"db_password: stored (0 bytes)" in output
    piped = alice.run("set", "other", input=b"")
    assert piped.exit_code == 0 and "(0 bytes)" in piped.stderr
