"""Leak audit: a random canary goes through init -> set -> up -> down and is then searched for
everywhere it must not be. While `up` runs it may exist only in the runtime dir on tmpfs."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
from pathlib import Path

import pytest
from conftest import (
    User,
    compose_down,
    devsecrets,
    project_name,
    start_foreground_up,
    write_stack,
)

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def files_containing(needle: bytes, roots: list[Path], skip: tuple[Path, ...] = ()) -> list[str]:
    """Every regular file under `roots` whose bytes contain `needle` (names only, never content)."""
    hits = []
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            if any(Path(dirpath).is_relative_to(s) for s in skip):
                dirnames[:] = []
                continue
            for filename in filenames:
                path = Path(dirpath) / filename
                try:
                    if not path.is_file() or path.is_symlink() or path.stat().st_size > 200_000_000:
                        continue
                    if needle in path.read_bytes():
                        hits.append(str(path))
                except OSError:
                    continue
    return hits


def processes_containing(needle: bytes) -> list[str]:
    hits = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        for part in ("cmdline", "environ"):
            try:
                if needle in (proc / part).read_bytes():
                    hits.append(f"{proc.name}/{part}")
            except OSError:
                continue
    return hits


def inspect_all() -> bytes:
    ids = subprocess.run(
        ["docker", "ps", "-aq"], capture_output=True, text=True, check=True
    ).stdout.split()
    if not ids:
        return b""
    return subprocess.run(["docker", "inspect", *ids], capture_output=True, check=True).stdout


def test_the_canary_is_nowhere_but_tmpfs_and_gone_after_down(
    alice: User, docker_engine: str, runtime_dir: Path
):
    canary = f"canary-leak-{secrets.token_hex(12)}".encode()
    name = project_name()
    write_stack(
        alice.project,
        docker_engine,
        {
            "app": {
                "secrets": ["db_password"],
                "environment": {"DB_PASSWORD_FILE": "/run/secrets/db_password"},
            }
        },
    )
    env = {
        **alice.subprocess_env(),
        "DEVSECRETS_RUNTIME_DIR": str(runtime_dir),
        "COMPOSE_PROJECT_NAME": name,
    }
    set_result = devsecrets(["set", "db_password"], cwd=alice.project, env=env, input=canary)
    assert set_result.returncode == 0
    output = set_result.stdout + set_result.stderr
    engine_root = Path(
        subprocess.run(
            ["docker", "info", "--format", "{{.DockerRootDir}}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    up = start_foreground_up(alice.project, env, name, 1)
    try:
        # positive control: the search finds it where it must be, in the runtime dir
        assert files_containing(canary, [runtime_dir])
        assert not files_containing(canary, [runtime_dir / name / "override.yml"])
        assert processes_containing(canary) == []
        assert canary not in inspect_all()
        during = files_containing(
            canary,
            [Path("/tmp"), alice.home, alice.project, engine_root, Path("/dev/shm")],
            skip=(runtime_dir,),
        )
        assert during == []
    finally:
        up.send_signal(signal.SIGTERM)
        out, err = up.communicate(timeout=60)
    output += out + err
    down = devsecrets(["down"], cwd=alice.project, env=env)
    output += down.stdout + down.stderr
    compose_down(name, alice.project)

    assert canary not in output  # devsecrets' and compose's own output
    assert not runtime_dir.joinpath(name).exists()
    assert (
        files_containing(
            canary, [Path("/tmp"), alice.home, alice.project, engine_root, Path("/dev/shm")]
        )
        == []
    )
    assert canary not in inspect_all()
    assert processes_containing(canary) == []
