"""The runtime tree: only what devsecrets made is reused or removed, no path can be swapped
under it, a running edit survives cleanup, and a squatted default has a way out."""

from __future__ import annotations

import os
import secrets as _random
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest
from conftest import User, devsecrets_cmd

from devsecrets import runtime_dir
from devsecrets.errors import TmpfsError
from devsecrets.runtime_dir import MARKER, clean_stale, private_root, wipe

CANARY = b"canary-runtime-5d1e"
ALWAYS = lambda name, state: True  # noqa: E731 - a cleanup that would remove anything it may


@pytest.fixture
def shm_dir():
    """A scratch directory on /dev/shm (tmpfs), removed afterwards."""
    path = Path("/dev/shm") / f"devsecrets-t-{_random.token_hex(4)}"
    path.mkdir(mode=0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def users_things(directory: Path) -> dict[str, bytes]:
    """What a real $XDG_RUNTIME_DIR or home holds; devsecrets must never touch any of it."""
    things = {}
    for sub in ("gnupg", "systemd", ".ssh", "Documents"):
        (directory / sub).mkdir(mode=0o755)
        (directory / sub / "keep").write_bytes(sub.encode())
        things[sub] = sub.encode()
    return things


def assert_untouched(directory: Path, things: dict[str, bytes]) -> None:
    for sub, content in things.items():
        assert (directory / sub / "keep").read_bytes() == content, sub


# -- 1. never destroy what is not ours ------------------------------------------------------


def test_a_given_dir_holding_other_things_gets_a_subdirectory_and_keeps_its_mode(shm_dir):
    things = users_things(shm_dir)
    root = private_root({"DEVSECRETS_RUNTIME_DIR": str(shm_dir)})
    assert root == shm_dir / "devsecrets"
    assert (root / MARKER).is_file()
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert stat.S_IMODE(shm_dir.stat().st_mode) == 0o755  # the user's dir is not chmodded
    assert clean_stale(root, keep="none", is_stale=ALWAYS) == []
    # even pointed straight at the user's dir, cleanup and wipe touch nothing unmarked
    assert clean_stale(shm_dir, keep="none", is_stale=ALWAYS) == []
    assert not wipe(shm_dir / "Documents")
    assert_untouched(shm_dir, things)


def test_an_absent_given_dir_is_made_ours_and_reused(shm_dir):
    given = shm_dir / "rt"
    assert private_root({"DEVSECRETS_RUNTIME_DIR": str(given)}) == given
    os.chmod(given, 0o755)  # noqa: S103 - ours (marked): brought back to 0700
    assert private_root({"DEVSECRETS_RUNTIME_DIR": str(given)}) == given
    assert stat.S_IMODE(given.stat().st_mode) == 0o700


def test_xdg_runtime_dir_with_an_old_unmarked_devsecrets_dir_is_left_alone(shm_dir):
    old = shm_dir / "devsecrets"
    (old / "shop").mkdir(parents=True)
    (old / "shop" / "state.json").write_text("{}")
    things = users_things(shm_dir)
    root = private_root({"XDG_RUNTIME_DIR": str(shm_dir)})
    assert root == old / "devsecrets"
    assert clean_stale(root, keep="x", is_stale=ALWAYS) == []
    assert (old / "shop" / "state.json").exists()
    assert_untouched(shm_dir, things)


def test_cleanup_removes_only_our_unlocked_stale_project_dirs(shm_dir):
    root = private_root({"DEVSECRETS_RUNTIME_DIR": str(shm_dir / "rt")})
    (root / "notours").mkdir()
    held = runtime_dir.hold(root / "live")
    runtime_dir.hold(root / "gone").release()
    (root / "gone" / "value").write_bytes(CANARY)
    removed = clean_stale(root, keep="me", is_stale=ALWAYS)
    assert removed == ["gone"]
    assert (root / "notours").is_dir()
    assert (root / "live").is_dir()
    held.release()
    assert clean_stale(root, keep="me", is_stale=ALWAYS) == ["live"]
    assert sorted(p.name for p in root.iterdir()) == [MARKER, "notours"]


def test_a_project_dir_that_devsecrets_did_not_make_is_refused(shm_dir):
    from devsecrets.layout import plan
    from devsecrets.materialize import materialize
    from devsecrets.stack import read_model

    root = private_root({"DEVSECRETS_RUNTIME_DIR": str(shm_dir / "rt")})
    (root / "shop").mkdir()
    model = {
        "name": "shop",
        "services": {"api": {"secrets": [{"source": "db", "target": "/run/secrets/db"}]}},
        "secrets": {"db": {"external": True}},
    }
    with pytest.raises(TmpfsError, match="was not made by devsecrets"):
        materialize(root / "shop", plan(read_model(model), {"db"}), {"db": CANARY})
    assert list((root / "shop").iterdir()) == []


# -- 3. no path another user can swap -------------------------------------------------------


def test_a_root_below_a_directory_others_can_write_is_refused(shm_dir):
    open_dir = shm_dir / "open"
    open_dir.mkdir()
    os.chmod(open_dir, 0o777)  # noqa: S103 - world-writable, not sticky: the attack
    with pytest.raises(TmpfsError, match="writable by other users") as caught:
        private_root({"DEVSECRETS_RUNTIME_DIR": str(open_dir / "rt")})
    assert "\n" not in caught.value.message
    assert not (open_dir / "rt").exists()


def test_a_root_below_another_users_directory_is_refused(shm_dir):
    if os.geteuid() != 0:
        pytest.skip("needs root to give a directory to another uid")
    theirs = shm_dir / "theirs"
    theirs.mkdir(mode=0o755)
    os.chown(theirs, 54321, 54321)
    with pytest.raises(TmpfsError, match="belongs to uid 54321, who could swap"):
        private_root({"DEVSECRETS_RUNTIME_DIR": str(theirs / "rt")})
    assert not (theirs / "rt").exists()


@pytest.mark.parametrize("via", ["XDG_RUNTIME_DIR", "DEVSECRETS_RUNTIME_DIR"])
def test_another_users_runtime_dir_is_refused_with_a_hint(shm_dir, via: str):
    if os.geteuid() != 0:
        pytest.skip("needs root to give a directory to another uid")
    theirs = shm_dir / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, 54321, 54321)
    env = {via: str(theirs)}
    with pytest.raises(TmpfsError, match="belongs to uid 54321") as caught:
        private_root(env)
    hint = caught.value.hint or ""
    if via == "XDG_RUNTIME_DIR":
        assert hint.startswith("unset XDG_RUNTIME_DIR, or set DEVSECRETS_RUNTIME_DIR=")
    else:
        assert hint.startswith("point DEVSECRETS_RUNTIME_DIR at a tmpfs directory of your own")


def test_symlinks_are_followed_only_when_we_or_root_made_them(shm_dir):
    target = shm_dir / "real"
    target.mkdir(mode=0o700)
    (shm_dir / "link").symlink_to(target)
    assert private_root({"DEVSECRETS_RUNTIME_DIR": str(shm_dir / "link" / "rt")}) == target / "rt"
    if os.geteuid() != 0:
        return
    sticky = shm_dir / "sticky"
    sticky.mkdir()
    os.chmod(sticky, 0o1777)  # noqa: S103 - like /tmp
    (sticky / "planted").symlink_to(target)
    os.lchown(sticky / "planted", 54321, 54321)
    with pytest.raises(TmpfsError, match="symlink owned by uid 54321"):
        private_root({"DEVSECRETS_RUNTIME_DIR": str(sticky / "planted" / "rt2")})
    assert not (target / "rt2").exists()


# -- 8. a squatted default ------------------------------------------------------------------


def test_a_squatted_default_gets_a_private_fallback_that_later_commands_find(
    shm_dir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    if os.geteuid() != 0:
        pytest.skip("needs root to squat as another uid")
    os.chmod(shm_dir, 0o1777)  # noqa: S103 - like /dev/shm
    monkeypatch.setattr(runtime_dir, "SHM", shm_dir)
    squatted = shm_dir / f"devsecrets-{os.geteuid()}"
    squatted.mkdir(mode=0o777)
    os.chown(squatted, 54321, 54321)
    env = {"XDG_CACHE_HOME": str(tmp_path)}
    lines: list[str] = []
    first = private_root(env, warn=lines.append)
    assert first.parent == shm_dir and first.name.startswith(squatted.name + "-")
    assert stat.S_IMODE(first.stat().st_mode) == 0o700 and first.stat().st_uid == os.geteuid()
    assert len(lines) == 1
    assert f"{squatted} belongs to uid 54321" in lines[0]
    assert "DEVSECRETS_RUNTIME_DIR" in lines[0]
    assert private_root(env, warn=lines.append) == first  # found again through the pointer
    pointer = tmp_path / "devsecrets" / runtime_dir.POINTER
    assert stat.S_IMODE(pointer.stat().st_mode) == 0o600
    shutil.rmtree(first)  # a reboot: a new private place, recorded again
    second = private_root(env)
    assert second != first and second.is_dir()
    assert private_root(env) == second
    assert list(squatted.iterdir()) == []  # nothing written into the squatter's directory


# -- 2. a running edit survives cleanup -----------------------------------------------------


def _start_edit(
    alice: User, tmp_path: Path, root: Path, body: str
) -> tuple[subprocess.Popen, Path]:
    script = tmp_path / "editor.sh"
    log = tmp_path / "editor.log"
    script.write_text(f'#!/bin/sh\necho "$1" > {log}.tmp && mv {log}.tmp {log}\n{body}\n')
    script.chmod(0o755)
    env = {
        **alice.subprocess_env(),
        "EDITOR": str(script),
        "DEVSECRETS_RUNTIME_DIR": str(root),
    }
    proc = subprocess.Popen(
        [*devsecrets_cmd(), "--store", str(alice.store), "edit", "x"],
        env=env,
        start_new_session=True,  # its own group: the test can kill it with its editor
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while not log.exists():
        assert proc.poll() is None, proc.communicate()[1].decode()
        assert time.monotonic() < deadline, "editor never started"
        time.sleep(0.05)
    return proc, Path(log.read_text().strip())


def test_cleanup_by_another_process_skips_a_running_edit(alice: User, tmp_path: Path, shm_dir):
    alice.run("set", "x", input=b"old")
    go = tmp_path / "go"
    root = shm_dir / "rt"
    body = f'while [ ! -e {go} ]; do sleep 0.05; done; printf new > "$1"'
    proc, copy = _start_edit(alice, tmp_path, root, body)
    assert clean_stale(root, keep="none", is_stale=ALWAYS) == []
    assert copy.read_bytes() == b"old"
    go.touch()
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    assert alice.run("get", "x").stdout == b"new"
    assert not copy.parent.exists()


def test_a_killed_edits_leftover_copy_is_removed_by_the_next_cleanup(
    alice: User, tmp_path: Path, shm_dir
):
    alice.run("set", "x", input=CANARY)
    root = shm_dir / "rt"
    proc, copy = _start_edit(alice, tmp_path, root, "exec sleep 30")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=20)
    assert copy.read_bytes() == CANARY  # SIGKILL cannot be caught: the next run cleans
    assert clean_stale(root, keep="none", is_stale=ALWAYS) == [copy.parent.name]
    assert not copy.parent.exists()


def as_plain_user(check) -> None:
    """Run `check()` as an unprivileged uid: in a forked child that drops root (root writes
    any file whatever its mode, so a mode check means nothing there)."""
    if os.geteuid() != 0:
        check()
        return
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit code
        code = 1
        try:
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            check()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the check failed as uid 65534"


def test_a_scratch_dir_overwrites_even_its_read_only_files_before_removal(shm_dir: Path):
    """`run` writes its files 0400: the shred before unlink must still reach their bytes."""
    os.chmod(shm_dir, 0o1777)  # noqa: S103 - sticky, like /dev/shm: an unprivileged user may work in it

    def check() -> None:
        root = private_root({"DEVSECRETS_RUNTIME_DIR": str(shm_dir / "mine")})
        with runtime_dir.scratch_dir(root, "run-") as (_, dir_fd):
            fd = os.open("x", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400, dir_fd=dir_fd)
            os.write(fd, CANARY)
            os.close(fd)
            kept = os.open("x", os.O_RDONLY, dir_fd=dir_fd)  # what a page reuse would see
        try:
            assert os.pread(kept, 64, 0) == b"\0" * len(CANARY)
        finally:
            os.close(kept)
        assert not any(root.glob("run-*"))

    as_plain_user(check)
