"""Attacks by another local user, with real throwaway users (`useradd -M -N`, removed after):
squatting the default runtime dir, swapping path components for symlinks, reading another
user's runtime dir. Runs as root, only in CI or when DEVSECRETS_TEST_USERS=1."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets as _random
import shutil
import stat
import subprocess
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import IN_CI, User, devsecrets_cmd

from devsecrets import fdpath, runtime_dir
from devsecrets.errors import DevsecretsError

CANARY = b"canary-multiuser-3f0b"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not (IN_CI or os.environ.get("DEVSECRETS_TEST_USERS") == "1"),
    reason="creates throwaway users: needs root and CI=true or DEVSECRETS_TEST_USERS=1",
)


class Person:
    def __init__(self, name: str) -> None:
        self.name = name
        entry = subprocess.run(["id", "-u", name], capture_output=True, text=True, check=True)
        self.uid = int(entry.stdout)
        self.gid = int(subprocess.run(["id", "-g", name], capture_output=True, text=True).stdout)

    def do(self, action: Callable[[], Any], timeout: float = 60) -> dict[str, Any]:
        """Run `action` in a forked child that has become this user; its result or error."""
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            os.close(read)
            try:
                os.setgroups([])
                os.setgid(self.gid)
                os.setuid(self.uid)
                result: dict[str, Any] = {"value": action()}
            except DevsecretsError as e:
                result = {"error": type(e).__name__, "message": e.message}
            except OSError as e:
                result = {"error": "OSError", "errno": e.errno}
            except BaseException:  # noqa: BLE001 - reported to the parent
                result = {"error": "crash", "message": traceback.format_exc()}
            os.write(write, json.dumps(result, default=str).encode())
            os._exit(0)
        os.close(write)
        with os.fdopen(read, "rb") as pipe:
            data = pipe.read()
        os.waitpid(pid, 0)
        return json.loads(data)


@pytest.fixture
def people() -> Iterator[tuple[Person, Person]]:
    """Two throwaway users: alice (the victim) and mallory (the attacker)."""
    tag = _random.token_hex(3)
    names = [f"dsa{tag}", f"dsm{tag}"]
    for name in names:
        subprocess.run(
            ["useradd", "-M", "-N", "-s", "/usr/sbin/nologin", name],
            check=True,
            capture_output=True,
        )
    try:
        yield Person(names[0]), Person(names[1])
    finally:
        for name in names:
            subprocess.run(["userdel", name], check=False, capture_output=True)


@pytest.fixture
def place() -> Iterator[Path]:
    """A prefix for paths in /dev/shm (sticky, world-writable) for this test; all removed."""
    prefix = Path("/dev/shm") / f"dsmu-{_random.token_hex(4)}"
    yield prefix
    for path in Path("/dev/shm").glob(prefix.name + "*"):
        if path.is_symlink() or not path.is_dir():
            path.unlink()
        else:
            shutil.rmtree(path)


def owned_dir(path: Path, person: Person, mode: int = 0o700) -> Path:
    path.mkdir(mode=mode)
    os.chmod(path, mode)
    os.chown(path, person.uid, person.gid)
    return path


def test_a_squatted_default_runtime_dir_names_the_squatter_and_a_private_fallback_is_found_again(
    people, place: Path
):
    alice, mallory = people
    default = Path("/dev/shm") / f"devsecrets-{alice.uid}"
    cache = owned_dir(Path(f"{place}-cache"), alice)
    try:
        squat = mallory.do(lambda: os.mkdir(default) or os.chmod(default, 0o777))  # noqa: S103
        assert squat == {"value": None}

        def twice() -> list[Any]:
            lines: list[str] = []
            env = {"XDG_CACHE_HOME": str(cache)}
            first = runtime_dir.private_root(env, warn=lines.append)
            second = runtime_dir.private_root(env, warn=lines.append)
            info = os.stat(first)
            return [str(first), str(second), lines, info.st_uid, stat.S_IMODE(info.st_mode)]

        outcome = alice.do(twice)
        assert "error" not in outcome, outcome
        first, second, lines, uid, mode = outcome["value"]
        assert first == second
        assert Path(first).name.startswith(f"devsecrets-{alice.uid}-")
        assert (uid, mode) == (alice.uid, 0o700)
        assert len(lines) == 2
        assert f"{default} belongs to {mallory.name} (uid {mallory.uid})" in lines[0]
        assert "DEVSECRETS_RUNTIME_DIR" in lines[0]
        assert list(default.iterdir()) == []
        shutil.rmtree(first)
    finally:
        shutil.rmtree(default, ignore_errors=True)


def test_another_user_cannot_read_or_reuse_my_runtime_dir(people, place: Path):
    alice, mallory = people
    given = place  # absent: alice's devsecrets makes it

    def materialize() -> str:
        root = runtime_dir.private_root({"DEVSECRETS_RUNTIME_DIR": str(given)})
        held = runtime_dir.hold(root / "shop")
        fd = fdpath.open_dir(root / "shop")
        fdpath.write_file(fd, "db_password", CANARY)
        os.close(fd)
        held.release()
        return str(root)

    made = alice.do(materialize)
    assert made == {"value": str(given)}
    assert mallory.do(lambda: os.listdir(given)) == {"error": "OSError", "errno": errno.EACCES}
    read = mallory.do(lambda: Path(given, "shop", "db_password").read_bytes().decode())
    assert read == {"error": "OSError", "errno": errno.EACCES}
    reuse = mallory.do(
        lambda: str(runtime_dir.private_root({"DEVSECRETS_RUNTIME_DIR": str(given)}))
    )
    assert "value" not in reuse and reuse["error"] != "crash", reuse  # a DevsecretsError
    assert f"belongs to {alice.name}" in reuse["message"]


def test_sudo_e_with_the_users_xdg_runtime_dir_is_refused_in_one_line(
    people, place: Path, alice: User, tmp_path: Path
):
    """root with the caller's XDG_RUNTIME_DIR (sudo -E): that user owns the directory and could
    swap `devsecrets` in it for a symlink at any moment. Refused; nothing written there."""
    _, mallory = people
    xdg = owned_dir(Path(f"{place}-run"), mallory)
    loot = owned_dir(Path(f"{place}-loot"), mallory, 0o777)
    alice.run("set", "x", input=CANARY)
    editor = tmp_path / "editor.sh"
    editor.write_text('#!/bin/sh\nprintf changed > "$1"\n')
    editor.chmod(0o755)
    env = {**alice.subprocess_env(), "XDG_RUNTIME_DIR": str(xdg), "EDITOR": str(editor)}
    del env["DEVSECRETS_RUNTIME_DIR"]  # the default, under XDG_RUNTIME_DIR, is what is tested
    mallory.do(lambda: os.symlink(loot, xdg / "devsecrets"))
    for _ in range(2):
        result = subprocess.run(
            [*devsecrets_cmd(), "--store", str(alice.store), "edit", "x"],
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 1, result.stderr.decode()
        lines = result.stderr.decode().splitlines()
        assert len(lines) <= 2
        assert f"{xdg} belongs to {mallory.name}" in lines[0]
        assert list(loot.iterdir()) == []
        mallory.do(lambda: os.unlink(xdg / "devsecrets") or os.mkdir(xdg / "devsecrets", 0o777))
    assert list((xdg / "devsecrets").iterdir()) == []
    assert alice.run("get", "x").stdout == CANARY


@pytest.mark.slow
def test_symlink_swaps_of_a_path_component_never_redirect_roots_writes(people, place: Path):
    """mallory swaps a component of root's runtime path (in sticky /dev/shm) between absent
    and a symlink to her own directory, as fast as she can, while root makes its runtime dir,
    writes a value and wipes it, again and again. Nothing ever lands in mallory's directory,
    and each of root's attempts either works in a directory root owns or is refused."""
    _, mallory = people
    loot = owned_dir(Path(f"{place}-loot"), mallory, 0o777)
    race = Path(f"{place}-race")
    deadline = time.time() + 3

    def swap() -> int:
        swaps = 0
        while time.time() < deadline:
            try:
                os.symlink(loot, race)
                os.unlink(race)
                swaps += 1
            except OSError:
                time.sleep(0)
        return swaps

    attacker = os.fork()
    if attacker == 0:  # pragma: no cover - the child
        os._exit(0 if "value" in mallory.do(swap, timeout=10) else 1)
    outcomes = {"used": 0, "refused": 0}
    try:
        while time.time() < deadline:
            try:
                root = runtime_dir.private_root({"DEVSECRETS_RUNTIME_DIR": str(race / "rt")})
                held = runtime_dir.hold(root / "p")
                fd = fdpath.open_dir(root / "p")
                info = os.fstat(fd)
                assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (0, 0o700)
                fdpath.write_file(fd, "value", CANARY)
                os.close(fd)
                held.release()
                assert runtime_dir.wipe(root / "p")
                outcomes["used"] += 1
            except DevsecretsError as e:
                assert "\n" not in e.message
                outcomes["refused"] += 1
            with contextlib.suppress(FileNotFoundError):
                info = os.lstat(race)
                if stat.S_ISDIR(info.st_mode) and info.st_uid == 0:  # ours: mallory cannot swap
                    shutil.rmtree(race)  # let mallory race again
    finally:
        os.waitpid(attacker, 0)
    assert outcomes["used"] + outcomes["refused"] > 10, outcomes
    assert [p for p in loot.rglob("*")] == []


def test_a_directory_writable_by_a_group_that_others_share_is_refused(people, place: Path):
    """`useradd -N` gives alice and mallory the same primary group: a directory of alice's
    that this group may write is one mallory can swap a component in, like /tmp without the
    sticky bit. A root below it is refused; nothing is made there."""
    alice, mallory = people
    if alice.gid != mallory.gid:
        pytest.skip("useradd -N gave the two users different primary groups here")
    shared = owned_dir(Path(f"{place}-shared"), alice, 0o775)

    outcome = alice.do(
        lambda: str(runtime_dir.private_root({"DEVSECRETS_RUNTIME_DIR": str(shared / "rt")}))
    )
    assert "value" not in outcome and outcome["error"] != "crash", outcome
    assert f"{shared} is writable by other users" in outcome["message"]
    assert list(shared.iterdir()) == []
    swap = mallory.do(lambda: os.mkdir(shared / "planted"))  # what the refusal guards against
    assert swap == {"value": None}
    private = owned_dir(Path(f"{place}-private"), alice, 0o700)
    made = alice.do(
        lambda: str(runtime_dir.private_root({"DEVSECRETS_RUNTIME_DIR": str(private / "rt")}))
    )
    assert made == {"value": str(private / "rt")}


@pytest.mark.parametrize("kind", ["file", "symlink", "fifo"])
def test_a_squat_that_is_not_a_directory_gets_the_private_fallback_too(people, place: Path, kind):
    """A file, a FIFO or a symlink at /dev/shm/devsecrets-<uid> (another user's): the same
    way out as a squatted directory, not a bare "is not a directory" with no hint."""
    alice, mallory = people
    default = Path("/dev/shm") / f"devsecrets-{alice.uid}"
    cache = owned_dir(Path(f"{place}-cache"), alice)
    loot = owned_dir(Path(f"{place}-loot"), mallory, 0o777)
    make = {
        "file": lambda: default.write_bytes(b""),
        "symlink": lambda: os.symlink(loot, default),
        "fifo": lambda: os.mkfifo(default),
    }[kind]
    try:
        assert "error" not in mallory.do(make)
        lines: list[str] = []

        def claim() -> str:
            return str(runtime_dir.private_root({"XDG_CACHE_HOME": str(cache)}, warn=lines.append))

        outcome = alice.do(lambda: [claim(), claim(), lines])
        assert "error" not in outcome, outcome
        first, second, warned = outcome["value"]
        assert first == second
        assert Path(first).name.startswith(f"devsecrets-{alice.uid}-")
        assert f"{default} belongs to {mallory.name}" in warned[0]
        assert list(loot.iterdir()) == []
        shutil.rmtree(first)
    finally:
        with contextlib.suppress(FileNotFoundError):
            default.unlink()
