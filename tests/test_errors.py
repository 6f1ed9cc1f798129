"""Every exit code in the README's table, through the real entry points: the console script's
`get` fast path and the full CLI. Each failure is one `devsecrets: error:` line (and maybe a
hint), never a raw traceback, except for a bug (3), which shows one."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import User

from devsecrets import errors
from devsecrets.cli import main as cli_main
from devsecrets.entry import main as entry_main
from devsecrets.store import Store

FAST = "entry"  # the console script: `get NAME` skips click
FULL = "cli"  # the click CLI

# A stand-in for docker compose: a real version, real exit codes, and the model in $FAKE_MODEL.
FAKE_COMPOSE = """#!/bin/sh
while [ $# -gt 0 ]; do
  case "$1" in -f|-p|--profile|--env-file|--project-directory) shift 2;; *) break;; esac
done
case "$1 $2" in
  "version --short") echo 2.30.0;;
  "config --format") /bin/cat "$FAKE_MODEL";;
  "config --quiet") ;;
  "ps "*) exit 7;;
  *) exit 1;;
esac
"""


@dataclass
class Outcome:
    returncode: int
    stdout: bytes
    stderr: bytes


@pytest.fixture
def invoke(monkeypatch: pytest.MonkeyPatch, capfdbinary: pytest.CaptureFixture[bytes]):
    """Run an entry point in this process, with a user's environment; its real output."""

    def run(
        user: User, *args: str, entry: str = FULL, env: dict[str, str] | None = None
    ) -> Outcome:
        for key, value in {**user.env, **(env or {})}.items():
            if value is None:
                monkeypatch.delenv(key, raising=False)
            else:
                monkeypatch.setenv(key, value)
        main = entry_main if entry == FAST else cli_main
        capfdbinary.readouterr()
        code = main(["--store", str(user.store), *args])
        out, err = capfdbinary.readouterr()
        return Outcome(code, out, err)

    return run


def one_error(result: Outcome, code: int, message: str) -> None:
    err = result.stderr.decode()
    assert result.returncode == code, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert lines[0].startswith("devsecrets: error: ") and message in lines[0], err
    assert all(line.startswith("devsecrets: hint: ") for line in lines[1:]), err


def test_the_codes_are_the_documented_ones():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = {
        errors.EXIT_OK: "success",
        errors.EXIT_FAILURE: "an expected failure",
        errors.EXIT_USAGE: "bad usage",
        errors.EXIT_BUG: "a bug",
        errors.EXIT_INTERRUPTED: "interrupted",
    }
    for code, meaning in table.items():
        row = next(line for line in readme.splitlines() if line.startswith(f"| {code} | "))
        assert meaning in row
        assert f"`{name_of(code)}`" in row


def name_of(code: int) -> str:
    return next(n for n in dir(errors) if n.startswith("EXIT_") and getattr(errors, n) == code)


@pytest.mark.parametrize("entry", [FAST, FULL])
def test_success_is_0(alice: User, entry: str, invoke):
    alice.run("set", "x", input=b"v")
    result = invoke(alice, "get", "x", entry=entry)
    assert (result.returncode, result.stdout) == (0, b"v")


@pytest.mark.parametrize("entry", [FAST, FULL])
def test_a_missing_secret_is_1(alice: User, entry: str, invoke):
    one_error(invoke(alice, "get", "nope", entry=entry), 1, "no secret 'nope'")


@pytest.mark.parametrize("entry", [FAST, FULL])
def test_a_directory_in_place_of_a_secret_file_is_1_not_a_traceback(
    alice: User, entry: str, invoke
):
    (alice.store / "x.sops.yaml").mkdir()
    one_error(invoke(alice, "get", "x", entry=entry), 1, "is not a regular file")


def test_ls_with_a_directory_in_place_of_a_secret_file_is_1(alice: User, invoke):
    (alice.store / "x.sops.yaml").mkdir()
    one_error(invoke(alice, "ls"), 1, "is not a regular file")


@pytest.mark.parametrize("entry", [FAST, FULL])
def test_a_bad_name_is_2(alice: User, entry: str, invoke):
    one_error(invoke(alice, "get", "bad name", entry=entry), 2, "invalid secret name")


def test_click_usage_errors_are_2(alice: User, invoke):
    result = invoke(alice, "get", "--no-such-option")
    assert result.returncode == 2
    assert "No such option" in result.stderr.decode()


def boom(exception: BaseException):
    def raising(*args: object, **kwargs: object) -> None:
        raise exception

    return raising


@pytest.mark.parametrize("entry", [FAST, FULL])
def test_a_bug_is_3_with_its_traceback(alice: User, entry: str, invoke, monkeypatch):
    alice.run("set", "x", input=b"v")
    monkeypatch.setattr(Store, "read", boom(RuntimeError("bug")))
    monkeypatch.setattr("devsecrets.fastget.read_values", boom(RuntimeError("bug")))  # lean get
    result = invoke(alice, "get", "x", entry=entry)
    err = result.stderr.decode()
    assert result.returncode == 3
    assert "Traceback" in err and "RuntimeError: bug" in err
    assert err.endswith("devsecrets: internal error, please report it with the traceback above\n")


@pytest.mark.parametrize("entry", [FAST, FULL])
def test_ctrl_c_is_130(alice: User, entry: str, invoke, monkeypatch):
    alice.run("set", "x", input=b"v")
    monkeypatch.setattr(Store, "read", boom(KeyboardInterrupt()))
    monkeypatch.setattr("devsecrets.fastget.read_values", boom(KeyboardInterrupt()))
    result = invoke(alice, "get", "x", entry=entry)
    assert result.returncode == 130
    assert result.stderr.strip() == b"devsecrets: interrupted"


@pytest.mark.parametrize("entry", [FAST, FULL])
def test_debug_adds_the_traceback_to_an_expected_error(alice: User, entry: str, invoke):
    result = invoke(alice, "get", "nope", entry=entry, env={"DEVSECRETS_DEBUG": "1"})
    assert result.returncode == 1
    assert "Traceback" in result.stderr.decode()
    assert "devsecrets: error: no secret 'nope'" in result.stderr.decode()


# -- the stack commands, with a stand-in for compose ------------------------------------------


@pytest.fixture
def stack(alice: User, tmp_path: Path, runtime_dir: Path) -> dict[str, str]:
    """An environment where `render` works without Docker: a fake compose and a model file."""
    fake = tmp_path / "fake_compose"
    fake.write_text(FAKE_COMPOSE)
    fake.chmod(0o755)
    (alice.project / "docker-stack.yml").write_text("services: {}\n")
    bin_dir = tmp_path / "bin"  # no docker on PATH: no engine check
    bin_dir.mkdir()
    model = {
        "name": "errs",
        "services": {"api": {"image": "x", "secrets": [{"source": "db"}]}},
        "secrets": {"db": {"name": "db", "external": True}},
    }
    (tmp_path / "model.json").write_text(json.dumps(model))
    alice.run("set", "db", input=b"v")
    return {
        "DEVSECRETS_COMPOSE": str(fake),
        "FAKE_MODEL": str(tmp_path / "model.json"),
        "DEVSECRETS_RUNTIME_DIR": str(runtime_dir),
        "PATH": str(bin_dir),
        "COMPOSE_FILE": str(alice.project / "docker-stack.yml"),
    }


def set_model(env: dict[str, str], **changes: object) -> None:
    path = Path(env["FAKE_MODEL"])
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_render_works_with_the_stand_in(alice: User, stack: dict[str, str], invoke):
    result = invoke(alice, "render", env=stack)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().strip().endswith("override.yml")


def test_compose_exit_codes_pass_through(alice: User, stack: dict[str, str], invoke):
    assert invoke(alice, "compose", "ps", env=stack).returncode == 7


def test_an_empty_stored_secret_is_1_not_usage(alice: User, stack: dict[str, str], invoke):
    alice.run("set", "db", input=b"")
    one_error(invoke(alice, "render", env=stack), 1, "secret db is empty")


def test_a_bad_policy_in_the_stack_file_is_1_not_usage(alice: User, stack: dict[str, str], invoke):
    set_model(stack, **{"x-devsecrets": {"on-change": {"api": "reboot"}}})
    one_error(invoke(alice, "render", env=stack), 1, "unknown on-change policy")


def test_a_bad_policy_on_the_command_line_is_2(alice: User, stack: dict[str, str], invoke):
    result = invoke(alice, "up", "--on-change", "api=reboot", env=stack)
    one_error(result, 2, "unknown on-change policy")


def test_a_missing_secret_in_the_stack_is_1(alice: User, stack: dict[str, str], invoke):
    alice.run("rm", "db")
    one_error(invoke(alice, "render", env=stack), 1, "the stack needs 1 secret(s) the store lacks")


def test_a_runtime_dir_we_cannot_write_is_1(alice: User, stack: dict[str, str], invoke):
    from devsecrets.runtime_dir import private_root

    root = private_root(stack)  # the root devsecrets makes there, then a file in its way
    (root / "errs").write_text("not a directory")
    one_error(invoke(alice, "render", env=stack), 1, "cannot lock")


def failing_config(exception: BaseException):
    """subprocess.run, except that `compose config` raises `exception`."""
    real = subprocess.run

    def run(argv, *args, **kwargs):
        if "config" in argv:
            raise exception
        return real(argv, *args, **kwargs)

    return run


def test_a_compose_that_hangs_is_1(alice: User, stack: dict[str, str], invoke, monkeypatch):
    monkeypatch.setattr(subprocess, "run", failing_config(subprocess.TimeoutExpired("c", 120)))
    one_error(invoke(alice, "render", env=stack), 1, "did not answer within 120 s")


def test_a_compose_that_vanishes_is_1(alice: User, stack: dict[str, str], invoke, monkeypatch):
    monkeypatch.setattr(subprocess, "run", failing_config(FileNotFoundError(2, "No such file")))
    one_error(invoke(alice, "render", env=stack), 1, "could not run")
