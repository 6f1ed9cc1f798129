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
    # both at once (they only read the store): two cores, half the wait
    pipe = subprocess.PIPE
    fast_run = subprocess.Popen([*ENTRY, *args], env=env, stdout=pipe, stderr=pipe)
    full_run = subprocess.Popen([*FULL, *args], env=env, stdout=pipe, stderr=pipe)
    fast = (*fast_run.communicate(timeout=120), fast_run.returncode)
    full = (*full_run.communicate(timeout=120), full_run.returncode)
    assert (fast[2], fast[0], fast[1]) == (full[2], full[0], full[1])


def test_the_fast_exit_runs_atexit_handlers_and_waits_for_threads(tmp_path):
    """`_fast_exit` skips module teardown only: atexit handlers still run (logging's flush,
    once anything imported logging), and a live thread makes it decline."""
    marker = tmp_path / "atexit-ran"
    code = (
        "import atexit, sys, threading, time\n"
        "from devsecrets import entry\n"
        f"atexit.register(lambda: open({str(marker)!r}, 'w').write('yes'))\n"
        "if sys.argv[1] == 'thread':\n"
        "    threading.Thread(target=lambda: time.sleep(0.3)).start()\n"
        "entry._fast_exit(7)\n"
        "print('declined', flush=True)\n"
    )
    ran = subprocess.run([sys.executable, "-c", code, "plain"], capture_output=True, text=True)
    assert (ran.returncode, ran.stdout, marker.read_text()) == (7, "", "yes")
    marker.unlink()
    ran = subprocess.run([sys.executable, "-c", code, "thread"], capture_output=True, text=True)
    assert (ran.returncode, ran.stdout, marker.read_text()) == (0, "declined\n", "yes")
