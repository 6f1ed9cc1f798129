"""`devsecrets run -- CMD`: a real child process reads its secrets through NAME_FILE."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import User, devsecrets, devsecrets_cmd, write_stack

from devsecrets.hostrun import file_variable, variables_for
from devsecrets.tmpfs import filesystem_type

CANARY = b"canary-hostrun-5d0e"

# The child reports what it sees: the path in DB_PASSWORD_FILE, that file's bytes, its mode,
# its directory's mode and filesystem, and its whole environment and argv.
CHILD = r"""
import json, os, stat, sys
path = os.environ["DB_PASSWORD_FILE"]
report = {
    "path": path,
    "value": open(path, "rb").read().decode(),
    "mode": oct(stat.S_IMODE(os.stat(path).st_mode)),
    "dir_mode": oct(stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode)),
    "environ": dict(os.environ),
    "argv": sys.argv,
    "files": sorted(k for k, v in os.environ.items() if "/run-" in v and k.endswith("_FILE")),
}
open(sys.argv[1], "w").write(json.dumps(report))
sys.exit(int(sys.argv[2]))
"""


def child(tmp_path: Path, code: int = 0) -> tuple[list[str], Path]:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    report = tmp_path / "report.json"
    return [sys.executable, str(script), str(report), str(code)], report


def test_file_variables():
    assert file_variable("db_password") == "DB_PASSWORD_FILE"
    assert file_variable("tls.key") == "TLS_KEY_FILE"
    assert file_variable("api-token") == "API_TOKEN_FILE"
    with pytest.raises(Exception, match="would both be API_TOKEN_FILE"):
        variables_for(["api-token", "api_token"])


def test_named_secrets_reach_the_child_as_files_only(alice: User, tmp_path: Path, runtime_dir):
    import json

    alice.run("set", "db_password", input=CANARY)
    alice.run("set", "tls.key", input=b"k")
    argv, report_path = child(tmp_path, code=7)
    result = alice.run(
        "run",
        "--secret",
        "db_password",
        "--secret",
        "tls.key",
        "--",
        *argv,
        env={"DEVSECRETS_RUNTIME_DIR": str(runtime_dir)},
    )
    assert result.exit_code == 7  # the command's own exit code
    report = json.loads(report_path.read_text())
    assert report["value"] == CANARY.decode()
    assert report["mode"] == "0o400" and report["dir_mode"] == "0o700"
    assert report["files"] == ["DB_PASSWORD_FILE", "TLS_KEY_FILE"]
    assert filesystem_type(Path(report["path"]).parent) in ("tmpfs", "ramfs")
    # the value itself is in no variable and no argument, only its path is
    environ = report["environ"]
    assert not any(CANARY.decode() in v for v in environ.values())
    assert not any(CANARY.decode() in a for a in report["argv"])
    assert environ["DB_PASSWORD_FILE"].startswith(str(runtime_dir))
    assert not Path(report["path"]).exists()  # wiped when the child exited
    assert not any(runtime_dir.glob("run-*"))
    assert CANARY.decode() not in result.stderr and CANARY not in result.stdout


def test_an_unknown_secret_fails_before_running_anything(alice: User, tmp_path: Path):
    alice.run("set", "db_password", input=CANARY)
    marker = tmp_path / "ran"
    result = alice.run("run", "--secret", "db_pasword", "--", "touch", str(marker))
    assert result.exit_code == 1
    assert "did you mean 'db_password'?" in result.stderr
    assert not marker.exists()


def test_a_missing_command_is_one_line(alice: User, runtime_dir):
    alice.run("set", "x", input=b"v")
    result = alice.run(
        "run",
        "--secret",
        "x",
        "--",
        "/nonexistent/cmd",
        env={"DEVSECRETS_RUNTIME_DIR": str(runtime_dir)},
    )
    assert result.exit_code == 1
    assert "could not run '/nonexistent/cmd'" in result.stderr
    assert not any(runtime_dir.glob("run-*"))


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT])
def test_a_signal_reaches_the_child_and_the_files_are_wiped(
    alice: User, tmp_path: Path, runtime_dir, signum
):
    alice.run("set", "db_password", input=CANARY)
    ready = tmp_path / "ready"
    script = (
        "import os, signal, sys, time\n"
        f"signal.signal({int(signum)}, lambda *a: sys.exit(42))\n"
        f"open({str(ready)!r}, 'w').write(os.environ['DB_PASSWORD_FILE'])\n"
        "time.sleep(60)\n"
    )
    env = {**alice.subprocess_env(), "DEVSECRETS_RUNTIME_DIR": str(runtime_dir)}
    argv = [*devsecrets_cmd(), "--store", str(alice.store), "run", "--secret", "db_password"]
    proc = subprocess.Popen(
        [*argv, "--", sys.executable, "-c", script],
        env=env,
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while not ready.exists() or not ready.read_text():
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    path = Path(ready.read_text())
    assert path.read_bytes() == CANARY
    proc.send_signal(signum)
    assert proc.wait(timeout=30) == 42  # the child's own handler ran; its code came back
    assert not path.exists()
    assert not path.parent.exists()


def start_run(alice: User, runtime_dir: Path, ready: Path) -> tuple[subprocess.Popen, Path]:
    """A `devsecrets run` whose child writes its X_FILE path to `ready`, then sleeps."""
    script = (
        f"import os, time; open({str(ready)!r}, 'w').write(os.environ['X_FILE']); time.sleep(60)"
    )
    env = {**alice.subprocess_env(), "DEVSECRETS_RUNTIME_DIR": str(runtime_dir)}
    argv = [*devsecrets_cmd(), "--store", str(alice.store), "run", "--secret", "x"]
    proc = subprocess.Popen(
        [*argv, "--", sys.executable, "-c", script],
        env=env,
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # killpg ends the run and its child together
    )
    deadline = time.monotonic() + 60
    while not ready.exists() or not ready.read_text():
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return proc, Path(ready.read_text()).parent


def test_a_run_killed_outright_is_cleaned_by_the_next(alice: User, runtime_dir, tmp_path: Path):
    alice.run("set", "x", input=CANARY)
    env = {"DEVSECRETS_RUNTIME_DIR": str(runtime_dir)}
    killed, left = start_run(alice, runtime_dir, tmp_path / "killed")
    os.killpg(killed.pid, signal.SIGKILL)  # no cleanup can run: the directory stays
    killed.wait(timeout=30)
    assert (left / "x").read_bytes() == CANARY
    alive, kept = start_run(alice, runtime_dir, tmp_path / "alive")
    try:
        assert not left.exists()  # the next run removed it
        assert alice.run("run", "--secret", "x", "--", "true", env=env).exit_code == 0
        assert (kept / "x").read_bytes() == CANARY  # a run still going keeps its files
    finally:
        os.killpg(alive.pid, signal.SIGTERM)
        alive.wait(timeout=30)
    assert not kept.exists()


def test_stale_cleanup_removes_only_marked_directories_through_descriptors(
    alice: User, runtime_dir, tmp_path: Path
):
    """What looks like a dead run but is not provably ours survives the next run's cleanup:
    a symlink to someone's directory, a directory without our marker, another user's."""
    alice.run("set", "x", input=b"v")
    env = {**alice.subprocess_env(), "DEVSECRETS_RUNTIME_DIR": str(runtime_dir)}
    store = ["--store", str(alice.store)]
    assert (
        devsecrets([*store, "run", "--secret", "x", "--", "true"], cwd=tmp_path, env=env).returncode
        == 0
    )
    gone = subprocess.Popen(["true"])
    gone.wait()
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / ".pid").write_text(str(gone.pid))
    (victim / "precious").write_text("keep me")
    (runtime_dir / "run-link").symlink_to(victim)
    unmarked = runtime_dir / "run-unmarked"  # a dead run's look, but not made by devsecrets
    unmarked.mkdir(mode=0o700)
    (unmarked / ".pid").write_text(str(gone.pid))
    (unmarked / "precious").write_text("keep me")
    fifo = runtime_dir / "run-fifo"  # reading its pid by path would block forever
    fifo.mkdir(mode=0o700)
    os.mkfifo(fifo / ".pid")
    planted = [runtime_dir / "run-link", unmarked, fifo]
    if os.geteuid() == 0:  # another user's directory, with a marker of their own
        foreign = runtime_dir / "run-foreign"
        foreign.mkdir(mode=0o700)
        (foreign / ".devsecrets-owned").write_text("made by devsecrets for uid 65534\n")
        (foreign / ".pid").write_text(str(gone.pid))
        for path in (foreign / ".devsecrets-owned", foreign / ".pid", foreign):
            os.chown(path, 65534, 65534)
        planted.append(foreign)
    result = devsecrets(
        [*store, "run", "--secret", "x", "--", "true"], cwd=tmp_path, env=env, timeout=30
    )
    assert result.returncode == 0, result.stderr.decode()
    assert [p for p in planted if not os.path.lexists(p)] == []
    assert (victim / "precious").read_text() == "keep me"
    assert (unmarked / "precious").read_text() == "keep me"
    assert sorted(p.name for p in runtime_dir.glob("run-*")) == sorted(p.name for p in planted)


def test_a_secret_name_that_is_no_plain_file_name_is_refused(tmp_path: Path, runtime_dir):
    from devsecrets.errors import MaterializeError
    from devsecrets.hostrun import secret_files
    from devsecrets.runtime_dir import private_root

    root = private_root({"DEVSECRETS_RUNTIME_DIR": str(runtime_dir)})
    for name in (".lock", ".devsecrets-owned", "..", "a/b"):
        with (
            pytest.raises(MaterializeError, match="cannot be a file name"),
            secret_files(root, {name: b"v"}),
        ):
            pass
    assert not any(root.glob("run-*"))


@pytest.mark.docker
def test_without_names_the_stack_decides(alice: User, docker_engine: str, tmp_path, runtime_dir):
    import json

    alice.run("set", "db_password", input=CANARY)
    alice.run("set", "api_token", input=b"t")
    alice.run("set", "unused", input=b"u")
    write_stack(
        alice.project,
        docker_engine,
        {"api": {"secrets": ["db_password", "api_token"]}, "web": {}},
    )
    argv, report_path = child(tmp_path)
    env = {**alice.subprocess_env(), "DEVSECRETS_RUNTIME_DIR": str(runtime_dir)}
    result = devsecrets(["run", "--", *argv], cwd=alice.project, env=env)
    assert result.returncode == 0, result.stderr.decode()
    report = json.loads(report_path.read_text())
    assert report["files"] == ["API_TOKEN_FILE", "DB_PASSWORD_FILE"]  # not UNUSED_FILE
    assert report["value"] == CANARY.decode()
    assert CANARY not in result.stdout + result.stderr


def test_an_empty_secret_is_refused_before_anything_runs(alice: User, tmp_path: Path, runtime_dir):
    """As for `up`: an empty value is a mistake to fix, not a file to hand over."""
    alice.run("set", "x", input=b"")
    marker = tmp_path / "ran"
    env = {"DEVSECRETS_RUNTIME_DIR": str(runtime_dir)}
    result = alice.run("run", "--secret", "x", "--", "touch", str(marker), env=env)
    assert result.exit_code == 1
    assert "secret x is empty" in result.stderr
    assert "hint: give it a value with `devsecrets set x`" in result.stderr
    assert not marker.exists()
    assert not any(runtime_dir.glob("run-*"))


def test_two_names_for_one_variable_are_refused_before_anything_is_read(
    alice: User, tmp_path: Path, runtime_dir, monkeypatch: pytest.MonkeyPatch
):
    alice.run("set", "a-b", input=CANARY)
    alice.run("set", "a_b", input=CANARY)
    read: list[str] = []
    from devsecrets.store import Store

    original = Store.read_value
    monkeypatch.setattr(
        Store, "read_value", lambda self, name, ids: read.append(name) or original(self, name, ids)
    )
    marker = tmp_path / "ran"
    env = {"DEVSECRETS_RUNTIME_DIR": str(runtime_dir)}
    result = alice.run(
        "run", "--secret", "a-b", "--secret", "a_b", "--", "touch", str(marker), env=env
    )
    assert result.exit_code == 2
    assert "secrets 'a-b' and 'a_b' would both be A_B_FILE" in result.stderr
    assert "secret file(s)" not in result.stderr  # it named files it then never made
    assert read == []
    assert not marker.exists()
    assert not any(runtime_dir.glob("run-*"))
