"""The console script's fast paths (`get`, `set`, `up -d`) behave exactly like the full CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import User, compose_down, project_containers
from hypothesis import given, settings
from hypothesis import strategies as st

from devsecrets.fastpath import _up_args, lean_command

CANARY = b"canary-entry-51c7"  # the conftest `stack` fixture's value

ENTRY = [sys.executable, "-c", "import sys; from devsecrets.entry import main; sys.exit(main())"]
FULL = [sys.executable, "-c", "import sys; from devsecrets.cli import main; sys.exit(main())"]


@pytest.mark.parametrize(
    ("args", "lean"),
    [
        (["get", "x"], True),
        (["--store", "/s", "get", "x"], True),
        (["--store=/s", "get", "x"], True),
        (["--store=", "get", "x"], False),  # click reads it as "."
        (["--store", "", "get", "x"], False),
        (["--store=", "set", "x"], False),
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


# -- up -d ----------------------------------------------------------------------------------

_WORDS = st.sampled_from(["a", "b.yml", "x y", "-", "=", "--x", "auto", "host", "engine", "up"])
_TAKEN = st.one_of(  # pieces the lean path takes
    st.sampled_from([["--allow-disk"], ["--no-watch"], ["--no-mask"]]),
    st.tuples(
        st.sampled_from(
            ["-f", "--file", "-c", "--compose-file", "-p", "--project-name", "--profile",
             "--env-file", "--project-directory", "--engine-mode", "--helper-image"]
        ),
        _WORDS,
        st.booleans(),
    ).map(lambda t: [f"{t[0]}={t[1]}"] if t[2] and t[0].startswith("--") else [t[0], t[1]]),
)  # fmt: skip
_OTHER = st.sampled_from(  # pieces it leaves to the full CLI
    [["api"], ["--build"], ["-h"], ["--on-change", "api=restart"], ["--"], ["-dapi"],
     ["--allow-disk=1"], ["-pfoo"], ["--engine-mode"], ["-d"]]
)  # fmt: skip


@st.composite
def _up_shapes(draw: st.DrawFn) -> list[str]:
    pieces = draw(st.lists(_TAKEN, max_size=5))
    pieces.insert(draw(st.integers(0, len(pieces))), draw(st.sampled_from([["-d"], ["--detach"]])))
    if draw(st.integers(0, 4)) == 0:
        pieces.insert(draw(st.integers(0, len(pieces))), draw(_OTHER))
    return [word for piece in pieces for word in piece]


def _click_reading(args: list[str]) -> dict[str, object] | None:
    """click's own parameters for `devsecrets up ARGS`, or None when it refuses them."""
    import click

    from devsecrets.cli import cli

    try:
        with cli.commands["up"].make_context("up", list(args)) as ctx:
            return dict(ctx.params)
    except (click.ClickException, click.exceptions.Exit):
        return None


@settings(max_examples=400, deadline=None)
@given(_up_shapes())
def test_the_lean_up_reads_its_arguments_as_click_does(args: list[str]) -> None:
    """Whatever `up -d` shape the lean path takes, click reads the same; the rest it leaves
    to the full CLI."""
    lean = _up_args(args)
    if lean is None:
        return
    params = _click_reading(args)
    assert params is not None, "the lean path took arguments click refuses"
    assert params["compose_args"] == (lean.detach,)
    assert params["files"] == tuple(lean.lists.get("files", ()))
    assert params["profiles"] == tuple(lean.lists.get("profiles", ()))
    assert params["env_files"] == tuple(lean.lists.get("env_files", ()))
    for key in ("project_name", "project_directory", "engine_mode", "helper_image"):
        assert params[key] == lean.values.get(key), key
    for flag in ("allow_disk", "no_watch", "no_mask"):
        assert params[flag] == (flag in lean.flags), flag
    assert params["on_change"] == ()


@pytest.mark.parametrize(
    ("args", "lean"),
    [
        (["up", "-d"], True),
        (["up", "--detach", "-f", "s.yml", "-p", "shop", "--engine-mode=engine"], True),
        (["up", "-d", "--no-watch", "--allow-disk", "--profile", "a", "--profile", "b"], True),
        (["up"], False),  # the foreground up: the watcher, the masker
        (["up", "-d", "api"], False),
        (["up", "-d", "--build"], False),
        (["up", "-d", "-d"], False),
        (["up", "-d", "-p", "a", "-p", "b"], False),
        (["up", "-d", "--engine-mode", "bogus"], False),
        (["--store", "/s", "up", "-d"], False),
        (["--store=", "up", "-d"], False),  # click reads it as "." and says so
        (["up", "-d", "-p", "--debug"], False),  # the full CLI's tracebacks
        (["--debug", "up", "-d"], False),
        (["up", "-d", "--help"], False),
    ],
)
def test_only_plain_up_detached_takes_the_fast_path(args, lean):
    assert (lean_command(args) is not None) == lean


@pytest.mark.parametrize(
    ("variable", "value", "lean"),
    [
        ("DEVSECRETS_STORE", "/s", False),
        ("DEVSECRETS_STORE", "", False),
        ("DEVSECRETS_DEBUG", "1", True),
        ("DEVSECRETS_DEBUG", "foo", False),  # click refuses it: a usage error
        ("_DEVSECRETS_COMPLETE", "bash_complete", False),
    ],
)
def test_what_click_reads_from_the_environment_sends_up_to_click(
    variable, value, lean, monkeypatch
):
    monkeypatch.setenv(variable, value)
    assert (lean_command(["up", "-d"]) is not None) == lean


def test_ctrl_c_during_the_head_start_is_one_line_and_130(tmp_path: Path) -> None:
    """A Ctrl-C while `up` starts compose early (before the CLI's handler exists)."""
    code = (
        "import sys\n"
        "from devsecrets import configcache, entry\n"
        "def interrupted(args): raise KeyboardInterrupt\n"
        "configcache.prestart = interrupted\n"
        "sys.argv = ['devsecrets', 'up', '-d']\n"
        "sys.exit(entry.main())\n"
    )
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert (ran.returncode, ran.stderr) == (130, "devsecrets: interrupted\n")


def test_lines_for_a_pipe_carry_no_terminal_escapes(capsys) -> None:
    """As click.echo did: escape sequences (from a path or a name) are dropped off a terminal."""
    from devsecrets.app import say

    say("mounted \x1b[31mred\x1b[0m in /x")
    assert capsys.readouterr().err == "devsecrets: mounted red in /x\n"


@pytest.mark.docker
def test_up_detached_says_and_writes_the_same_on_both_paths(alice: User, stack, runtime_dir: Path):
    """The lean `up -d` and the full CLI's: the same lines, override, files and exit code."""
    env, name = stack
    seen = []
    for command in (ENTRY, FULL):
        run = subprocess.run(
            [*command, "up", "-d"], cwd=alice.project, env=env, capture_output=True, timeout=180
        )
        lines = [x for x in run.stderr.decode().splitlines() if x.startswith("devsecrets:")]
        project_dir = runtime_dir / name
        files = sorted(
            (str(p.relative_to(project_dir)), p.read_bytes(), oct(p.stat().st_mode))
            for p in project_dir.rglob("*")
            if p.is_file() and p.name != "state.json"
        )
        (cid,) = project_containers(name, "api")
        inside = subprocess.run(
            ["docker", "exec", cid, "sh", "-c", "ls -ln /run/secrets; md5sum /run/secrets/*"],
            capture_output=True,
            check=True,
        ).stdout
        seen.append((run.returncode, lines, files, inside))
        down = subprocess.run(
            [*FULL, "down", "-t", "0"], cwd=alice.project, env=env, capture_output=True
        )
        assert down.returncode == 0, down.stderr.decode()
        compose_down(name, alice.project)
    assert seen[0][0] == 0
    assert seen[0][1], "no devsecrets line"
    assert seen[0] == seen[1]
