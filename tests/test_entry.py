"""The console script's fast path for `get` behaves exactly like the full CLI."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import User

from devsecrets.fastpath import lean_command

ENTRY = [sys.executable, "-c", "import sys; from devsecrets.entry import main; sys.exit(main())"]
FULL = [sys.executable, "-c", "import sys; from devsecrets.cli import main; sys.exit(main())"]


@pytest.mark.parametrize(
    ("args", "lean"),
    [
        (["get", "x"], True),
        (["--store", "/s", "get", "x"], True),
        (["--store=/s", "get", "x"], True),
        (["get", "--json", "x", "y", "x"], True),
        (["set", "x"], False),
        (["set", "x", "--generate"], False),
        (["set", "--help"], False),
        (["get", "x", "y"], False),
        (["get", "x", "--json"], False),
        (["get", "--help"], False),
        (["get"], False),
        (["--debug", "get", "x"], False),
        (["ls"], False),
    ],
)
def test_only_plain_get_takes_the_fast_path(args, lean, monkeypatch):
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    assert (lean_command(args) is not None) == lean


@pytest.mark.parametrize(
    "args",
    [
        ["get", "db_password"],
        ["get", "--json", "db_password"],
        ["get", "--json", "db_password", "missing"],
        ["get", "db_password", "db_password"],
        ["get", "missing"],
        ["get", "bad name"],
        ["--store", "/nonexistent", "get", "x"],
    ],
)
def test_fast_and_full_paths_agree(alice: User, args):
    alice.run("set", "db_password", input=b"v\x00\n")
    env = alice.subprocess_env()
    if args[0] != "--store":
        args = ["--store", str(alice.store), *args]
    fast = subprocess.run([*ENTRY, *args], env=env, capture_output=True, check=False)
    full = subprocess.run([*FULL, *args], env=env, capture_output=True, check=False)
    assert (fast.returncode, fast.stdout, fast.stderr) == (
        full.returncode,
        full.stdout,
        full.stderr,
    )
