"""`edit` notices the trailing newline an editor adds, and strips it only when asked."""

from __future__ import annotations

import os
import pty
import subprocess
import time
from pathlib import Path

import pytest
from conftest import User, devsecrets_cmd
from test_edit import editor

from devsecrets.edit import added_newline


@pytest.mark.parametrize(
    ("before", "after", "added"),
    [
        (b"old", b"new\n", True),
        (b"old\n", b"new\n", False),  # the old value had one: nothing was added
        (b"old", b"new", False),
        (None, b"typed\n", True),  # a new one-line secret: a typed password
        (None, b"-----BEGIN-----\nx\n-----END-----\n", False),  # a new PEM keeps its newline
        (b"a\nb", b"a\nc\n", True),
    ],
)
def test_added_newline(before, after, added):
    assert added_newline(before, after) is added


def test_not_on_a_terminal_the_newline_is_kept_and_said(alice: User, tmp_path: Path):
    alice.run("set", "db_password", input=b"old")
    result = alice.run("edit", "db_password", env=editor(tmp_path, 'printf "new\\n" > "$1"'))
    assert result.exit_code == 0, result.stderr
    assert "your editor added a trailing newline to db_password; kept it" in result.stderr
    assert alice.run("get", "db_password").stdout == b"new\n"


def test_no_note_when_the_editor_added_no_newline(alice: User, tmp_path: Path):
    alice.run("set", "db_password", input=b"old")
    result = alice.run("edit", "db_password", env=editor(tmp_path, 'printf new > "$1"'))
    assert result.exit_code == 0, result.stderr
    assert "newline" not in result.stderr
    assert alice.run("get", "db_password").stdout == b"new"


def edit_on_a_terminal(user: User, env: dict[str, str], answer: bytes) -> tuple[int, bytes]:
    """Run `devsecrets edit` with a pty as its terminal; answer the prompt; return output."""
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [*devsecrets_cmd(), "--store", str(user.store), "edit", "db_password"],
        env={**user.subprocess_env(), **env},
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
    )
    os.close(secondary)
    output = b""
    deadline = time.monotonic() + 30
    answered = False
    while time.monotonic() < deadline:
        try:
            chunk = os.read(primary, 4096)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
        if not answered and b"strip it?" in output:
            os.write(primary, answer)
            answered = True
    os.close(primary)
    return proc.wait(timeout=30), output


def test_on_a_terminal_yes_strips_the_added_newline(alice: User, tmp_path: Path):
    alice.run("set", "db_password", input=b"old")
    code, output = edit_on_a_terminal(alice, editor(tmp_path, 'printf "new\\n" > "$1"'), b"y\n")
    assert code == 0, output
    assert b"strip it? [Y/n]" in output
    assert alice.run("get", "db_password").stdout == b"new"


def test_on_a_terminal_no_keeps_it(alice: User, tmp_path: Path):
    alice.run("set", "db_password", input=b"old")
    code, output = edit_on_a_terminal(alice, editor(tmp_path, 'printf "new\\n" > "$1"'), b"n\n")
    assert code == 0, output
    assert alice.run("get", "db_password").stdout == b"new\n"
