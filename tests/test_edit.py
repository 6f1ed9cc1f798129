"""`devsecrets edit`: the plaintext copy is on tmpfs, 0600, and gone in every case."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import DOCKER_CONFIG, User, devsecrets_cmd

from devsecrets.tmpfs import filesystem_type

CANARY = b"canary-edit-91c2"


def editor(tmp_path: Path, body: str) -> dict[str, str]:
    """An $EDITOR script; it records where it was asked to edit and the file's mode and fs."""
    script = tmp_path / "editor.sh"
    log = tmp_path / "editor.log"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$1" > {log}\n'
        f'stat -c %a "$1" >> {log}\n'
        f'stat -f -c %T "$(dirname "$1")" >> {log}\n'
        f"{body}\n"
    )
    script.chmod(0o755)
    return {"EDITOR": str(script)}


def logged(tmp_path: Path) -> list[str]:
    return (tmp_path / "editor.log").read_text().split("\n")


def wait_for_lines(path: Path, count: int = 3) -> None:
    """Until the editor script has written `count` lines to `path`: it has started."""
    deadline = time.monotonic() + 20
    while not (path.exists() and len(path.read_text().splitlines()) >= count):
        assert time.monotonic() < deadline, "editor never started"
        time.sleep(0.05)


def start_edit_with_core_dumps(
    alice: User, env: dict[str, str], cwd: Path, **popen: bool
) -> subprocess.Popen[bytes]:
    """`devsecrets edit x` under `ulimit -c unlimited` in `cwd`, its stderr captured."""
    return subprocess.Popen(
        ["sh", "-c", 'ulimit -c unlimited && exec "$@"', "sh", *devsecrets_cmd()]
        + ["--store", str(alice.store), "edit", "x"],
        env=env,
        cwd=cwd,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        **popen,
    )


def test_edit_changes_the_value_via_a_tmpfs_copy(alice: User, tmp_path: Path):
    alice.run("set", "db_password", input=b"old")
    result = alice.run("edit", "db_password", env=editor(tmp_path, 'printf new > "$1"'))
    assert result.exit_code == 0, result.stderr
    assert alice.run("get", "db_password").stdout == b"new"
    path, mode, fstype = logged(tmp_path)[:3]
    assert mode == "600"
    assert fstype in ("tmpfs", "ramfs")
    assert not Path(path).exists()
    assert not Path(path).parent.exists()


def test_edit_creates_a_new_secret(alice: User, tmp_path: Path):
    result = alice.run("edit", "fresh", env=editor(tmp_path, 'printf created > "$1"'))
    assert result.exit_code == 0, result.stderr
    assert alice.run("get", "fresh").stdout == b"created"


def test_unchanged_content_writes_nothing(alice: User, tmp_path: Path):
    alice.run("set", "x", input=b"keep")
    file = alice.store / "x.sops.yaml"
    before = file.read_bytes()
    result = alice.run("edit", "x", env=editor(tmp_path, "true"))
    assert result.exit_code == 0
    assert "unchanged" in result.stderr
    assert file.read_bytes() == before


def test_editor_failure_stores_nothing_and_removes_the_copy(alice: User, tmp_path: Path):
    alice.run("set", "x", input=b"keep")
    result = alice.run("edit", "x", env=editor(tmp_path, 'printf changed > "$1"; exit 3'))
    assert result.exit_code == 1
    assert "editor exited with code 3" in result.stderr
    assert alice.run("get", "x").stdout == b"keep"
    assert not Path(logged(tmp_path)[0]).exists()


def test_empty_result_asks_and_aborts_by_default(alice: User, tmp_path: Path):
    alice.run("set", "x", input=b"keep")
    env = editor(tmp_path, ': > "$1"')
    result = alice.run("edit", "x", env=env, input=b"n\n")
    assert result.exit_code == 1
    assert "store an empty value?" in result.stderr + result.out
    assert alice.run("get", "x").stdout == b"keep"
    result = alice.run("edit", "x", env=env, input=b"y\n")
    assert result.exit_code == 0
    assert alice.run("get", "x").stdout == b""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT])
def test_a_stop_signal_while_editing_removes_the_copy(alice: User, tmp_path: Path, signum):
    """A closed terminal (HUP), a dropped ssh, Ctrl-C, Ctrl-\\ or a kill: no copy left, and
    with `ulimit -c unlimited` no core file (with the value in it) in the working dir."""
    alice.run("set", "x", input=CANARY)
    env = {**alice.subprocess_env(), **editor(tmp_path, "exec sleep 30")}
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    proc = start_edit_with_core_dumps(alice, env, cwd)
    wait_for_lines(tmp_path / "editor.log")
    copy = Path(logged(tmp_path)[0])
    assert copy.read_bytes() == CANARY
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 128 + signum, err.decode()
    assert not copy.exists()
    assert not copy.parent.exists()
    assert CANARY not in err
    assert list(cwd.iterdir()) == []  # no core file
    assert alice.run("get", "x").stdout == CANARY


def test_the_editor_starts_with_no_blocked_signals_and_is_stopped_with_us(
    alice: User, tmp_path: Path
):
    """devsecrets blocks stop signals while it starts the editor (so one landing mid-spawn
    cannot orphan it); the editor itself must start with none blocked, and a stop signal to
    devsecrets must not leave it running."""
    alice.run("set", "x", input=CANARY)
    state = tmp_path / "editor.state"
    # Not a shell script: sh resets its signal mask when it starts, which would hide a leak.
    script = tmp_path / "editor.py"
    script.write_text(
        "import os, re, time\n"
        "status = open('/proc/self/status').read()\n"
        "lines = [l for l in status.splitlines() if re.match('Sig(Blk|Ign):', l)]\n"
        f"open({str(state)!r}, 'w').write('\\n'.join([*lines, str(os.getpid())]) + '\\n')\n"
        "time.sleep(30)\n"
    )
    env = {**alice.subprocess_env(), "EDITOR": f"{sys.executable} {script}"}
    proc = subprocess.Popen(
        [*devsecrets_cmd(), "--store", str(alice.store), "edit", "x"],
        env=env,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    wait_for_lines(state)
    blocked, _ignored, pid = state.read_text().splitlines()[:3]
    assert int(blocked.split()[1], 16) == 0, blocked
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 128 + signal.SIGTERM, err.decode()
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()


def test_a_crash_while_editing_leaves_no_core_file(alice: User, tmp_path: Path):
    """SIGSEGV cannot be caught and cleaned up after; the value must not reach a core file."""
    alice.run("set", "x", input=CANARY)
    env = {**alice.subprocess_env(), **editor(tmp_path, "exec sleep 30")}
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    proc = start_edit_with_core_dumps(alice, env, cwd, start_new_session=True)
    wait_for_lines(tmp_path / "editor.log")
    proc.send_signal(signal.SIGSEGV)
    proc.wait(timeout=20)
    os.killpg(proc.pid, signal.SIGKILL)  # the editor
    assert proc.returncode == -signal.SIGSEGV
    assert list(cwd.iterdir()) == []


def test_no_core_dumps_sets_the_limit_and_the_dumpable_flag():
    code = (
        "import ctypes, resource; from devsecrets.process import no_core_dumps; no_core_dumps(); "
        "print(resource.getrlimit(resource.RLIMIT_CORE)[0], ctypes.CDLL(None).prctl(3, 0, 0, 0, 0))"
    )
    out = subprocess.run(
        ["sh", "-c", 'ulimit -c unlimited && exec "$@"', "sh", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.split() == ["0", "0"]  # soft core limit 0, PR_GET_DUMPABLE 0


def test_a_change_to_the_store_while_editing_is_not_overwritten(alice: User, tmp_path: Path):
    file = alice.store / "x.sops.yaml"
    alice.run("set", "x", input=b"theirs")
    theirs = tmp_path / "theirs.sops.yaml"
    theirs.write_bytes(file.read_bytes())
    alice.run("set", "x", input=b"original")
    # the editor saves, and meanwhile a `set` or a `git pull` lands
    env = editor(tmp_path, f'printf mine > "$1"; cp {theirs} {file}')
    result = alice.run("edit", "x", env=env)
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 2  # error + hint
    assert "x changed in the store while you were editing it; nothing stored" in result.stderr
    assert "--force" in result.stderr
    assert alice.run("get", "x").stdout == b"theirs"
    assert not Path(logged(tmp_path)[0]).parent.exists()
    forced = alice.run("edit", "x", "--force", env=editor(tmp_path, 'printf mine > "$1"'))
    assert forced.exit_code == 0, forced.stderr
    assert alice.run("get", "x").stdout == b"mine"


def test_a_secret_created_meanwhile_is_not_overwritten(alice: User, tmp_path: Path):
    alice.run("set", "y", input=b"theirs")
    made = tmp_path / "y.sops.yaml"
    made.write_bytes((alice.store / "y.sops.yaml").read_bytes())
    alice.run("rm", "y")
    env = editor(tmp_path, f'printf mine > "$1"; cp {made} {alice.store / "y.sops.yaml"}')
    result = alice.run("edit", "y", env=env)
    assert result.exit_code == 1
    assert alice.run("get", "y").stdout == b"theirs"


def test_a_disk_backed_xdg_runtime_dir_is_passed_over_for_dev_shm(
    alice: User, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from devsecrets import runtime_dir

    disk = tmp_path / "disk"
    disk.mkdir()
    if filesystem_type(disk) in ("tmpfs", "ramfs"):
        pytest.skip("tmp_path is itself on tmpfs here")
    shm = Path(alice.env["DEVSECRETS_RUNTIME_DIR"]) / "shm"  # /dev/shm's stand-in, on tmpfs
    shm.mkdir(parents=True)
    monkeypatch.setattr(runtime_dir, "SHM", shm)  # the real default root stays untouched
    env = {
        **editor(tmp_path, 'printf v > "$1"'),
        "XDG_RUNTIME_DIR": str(disk),
        "DEVSECRETS_RUNTIME_DIR": None,  # the default is what is tested
    }
    assert alice.run("edit", "x", env=env).exit_code == 0
    assert logged(tmp_path)[2] in ("tmpfs", "ramfs")
    assert logged(tmp_path)[0].startswith(f"{shm}/devsecrets-{os.geteuid()}/edit-")
    assert list(disk.iterdir()) == []


def test_an_explicit_runtime_dir_on_disk_is_refused_without_allow_disk(alice: User, tmp_path: Path):
    disk = tmp_path / "disk"
    disk.mkdir()
    if filesystem_type(disk) in ("tmpfs", "ramfs"):
        pytest.skip("tmp_path is itself on tmpfs here")
    env = {**editor(tmp_path, 'printf v > "$1"'), "DEVSECRETS_RUNTIME_DIR": str(disk / "rt")}
    refused = alice.run("edit", "x", env=env)
    assert refused.exit_code == 1
    assert "is not on a tmpfs" in refused.stderr
    assert not (disk / "rt").exists()
    allowed = alice.run("edit", "x", "--allow-disk", env=env)
    assert allowed.exit_code == 0, allowed.stderr
    assert "warning: --allow-disk" in allowed.stderr
    from devsecrets.runtime_dir import MARKER

    assert [p.name for p in (disk / "rt").iterdir()] == [MARKER]  # the copy was removed


def test_core_refuses_disk_without_opt_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from devsecrets import runtime_dir, tmpfs
    from devsecrets.errors import TmpfsError

    monkeypatch.setattr(tmpfs, "is_memory_backed", lambda path: False)
    env = {"HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(tmp_path), "DOCKER_CONFIG": DOCKER_CONFIG}
    with pytest.raises(TmpfsError, match="no tmpfs for plaintext"):
        runtime_dir.private_root(env)
    chosen = runtime_dir.private_root(env, allow_disk=True)
    assert chosen.is_relative_to(tmp_path)
    assert oct(chosen.stat().st_mode)[-3:] == "700"


def test_python_dash_m_help_runs():
    result = subprocess.run(
        [sys.executable, "-m", "devsecrets", "--help"], capture_output=True, check=False
    )
    assert result.returncode == 0
    assert b"Usage: devsecrets" in result.stdout


def test_on_a_terminal_a_concurrent_change_offers_to_reopen_on_the_new_value(
    alice: User, tmp_path: Path
):
    import pty

    file = alice.store / "x.sops.yaml"
    alice.run("set", "x", input=b"theirs")
    theirs = tmp_path / "theirs.sops.yaml"
    theirs.write_bytes(file.read_bytes())
    alice.run("set", "x", input=b"original")
    seen = tmp_path / "seen"
    # first run: a `set` lands meanwhile; second run: sees their value, and builds on it
    script = (
        f'if [ ! -e {seen} ]; then cp "$1" {seen}; printf mine > "$1"; cp {theirs} {file}; '
        f'else cat "$1" >> {seen}; printf merged > "$1"; fi'
    )
    env = {**alice.subprocess_env(), **editor(tmp_path, script)}
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [*devsecrets_cmd(), "--store", str(alice.store), "edit", "x"],
        env=env,
        stdin=slave,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    os.close(slave)
    os.write(master, b"y\n")
    _, err = proc.communicate(timeout=60)
    os.close(master)
    assert proc.returncode == 0, err.decode()
    assert "changed in the store while you were editing" in err.decode()
    assert seen.read_bytes() == b"originaltheirs"
    assert alice.run("get", "x").stdout == b"merged"


def test_a_copy_left_by_a_killed_edit_is_removed_by_the_next_edit(alice: User, tmp_path: Path):
    """SIGKILL leaves the plaintext copy behind (nothing can run then); the next edit in the
    same runtime root overwrites and removes it, and leaves a live edit's copy alone."""
    alice.run("set", "x", input=CANARY)
    started = []
    for role in ("live", "killed"):
        logs = tmp_path / role
        logs.mkdir()
        env = {**alice.subprocess_env(), **editor(logs, "exec sleep 60")}
        proc = subprocess.Popen(
            [*devsecrets_cmd(), "--store", str(alice.store), "edit", "x"],
            env=env,
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # killpg reaches its editor too
        )
        wait_for_lines(logs / "editor.log")
        started.append((proc, Path(logged(logs)[0])))
    (live, live_copy), (killed, left) = started
    try:
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait(timeout=20)
        assert left.read_bytes() == CANARY
        quick = tmp_path / "quick"
        quick.mkdir()
        assert alice.run("edit", "x", env=editor(quick, 'printf new > "$1"')).exit_code == 0
        assert not left.parent.exists()
        assert live_copy.read_bytes() == CANARY  # still being edited: untouched
    finally:
        os.killpg(live.pid, signal.SIGTERM)
        live.wait(timeout=20)
    assert not live_copy.parent.exists()
