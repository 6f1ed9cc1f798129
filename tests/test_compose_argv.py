"""Finding compose's files and building its argv (pure, or on a temp tree)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import DOCKER_CONFIG

from devsecrets.compose import (
    Compose,
    ComposeOptions,
    ComposeProject,
    build_argv,
    discover_files,
    is_detached,
    parse_version,
)
from devsecrets.errors import StackError


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("services: {}\n")
    return path


def test_explicit_files_win(tmp_path: Path):
    touch(tmp_path / "compose.yaml")
    files = discover_files(ComposeOptions(files=("a.yml", "/abs/b.yml")), tmp_path, {})
    assert files == [tmp_path / "a.yml", Path("/abs/b.yml")]


def test_compose_file_from_env_and_dotenv(tmp_path: Path):
    assert discover_files(ComposeOptions(), tmp_path, {"COMPOSE_FILE": "x.yml:y.yml"}) == [
        tmp_path / "x.yml",
        tmp_path / "y.yml",
    ]
    (tmp_path / ".env").write_text("# comment\nCOMPOSE_FILE='stack.yml;local.yml'\n")
    found = discover_files(ComposeOptions(), tmp_path, {"COMPOSE_PATH_SEPARATOR": ";"})
    assert found == [tmp_path / "stack.yml", tmp_path / "local.yml"]


def test_discovery_walks_up_and_adds_the_override(tmp_path: Path):
    main = touch(tmp_path / "compose.yml")
    override = touch(tmp_path / "compose.override.yaml")
    deep = tmp_path / "src" / "pkg"
    deep.mkdir(parents=True)
    assert discover_files(ComposeOptions(), deep, {}) == [main, override]


def test_a_stack_file_is_found_when_there_is_no_compose_file(tmp_path: Path):
    stack = touch(tmp_path / "docker-stack.yml")
    assert discover_files(ComposeOptions(), tmp_path, {}) == [stack]


def test_nothing_found_is_one_clear_error(tmp_path: Path):
    with pytest.raises(StackError, match="no compose or stack file"):
        discover_files(ComposeOptions(), tmp_path, {})
    with pytest.raises(StackError, match="stdin"):
        discover_files(ComposeOptions(files=("-",)), tmp_path, {})


def test_override_goes_last_after_every_user_flag():
    project = ComposeProject(
        Compose(("docker", "compose"), (2, 40, 3), True),
        ("-f", "/s/a.yml", "-p", "shop"),
        (Path("/s/a.yml"),),
    )
    argv = build_argv(project, Path("/rt/override.yml"), ["up", "-d"])
    assert argv == [
        "docker",
        "compose",
        "-f",
        "/s/a.yml",
        "-p",
        "shop",
        "-f",
        "/rt/override.yml",
        "up",
        "-d",
    ]


@pytest.mark.parametrize(
    ("text", "version"),
    [
        ("2.40.3", (2, 40, 3)),
        ("v2.24.4\n", (2, 24, 4)),
        ("Docker Compose version v5.0.1", (5, 0, 1)),
        ("junk", None),
    ],
)
def test_parse_version(text, version):
    assert parse_version(text) == version


@pytest.mark.parametrize(
    ("args", "detached"),
    [
        ([], False),
        (["-d"], True),
        (["--detach"], True),
        (["--wait"], True),
        (["-dV"], True),
        (["--build", "api"], False),
        (["--", "-d"], False),
    ],
)
def test_is_detached(args, detached):
    assert is_detached(args) is detached


def test_a_passed_version_check_is_remembered_until_the_binary_changes(tmp_path: Path):
    import os
    import time

    from devsecrets.compose import find_compose

    calls = tmp_path / "calls"
    fake = tmp_path / "compose"
    fake.write_text(
        f'#!/bin/sh\necho "$@" >> {calls}\n[ "$1" = version ] && echo 2.40.3 && exit 0\nexit 1\n'
    )
    fake.chmod(0o755)
    env = {
        "DEVSECRETS_COMPOSE": str(fake),
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "DOCKER_CONFIG": DOCKER_CONFIG,
    }
    cache = tmp_path / "cache.json"
    assert find_compose(env, cache).version == (2, 40, 3)
    assert find_compose(env, cache).version == (2, 40, 3)
    assert calls.read_text().count("version") == 1  # the second run asked nobody
    later = time.time() + 5
    os.utime(fake, (later, later))  # an upgrade (or any change) of the binary
    find_compose(env, cache)
    assert calls.read_text().count("version") == 2


def test_a_failed_version_check_is_not_remembered(tmp_path: Path):
    import os

    from devsecrets.compose import find_compose
    from devsecrets.errors import ComposeError

    fake = tmp_path / "compose"
    fake.write_text("#!/bin/sh\necho 2.20.0\n")
    fake.chmod(0o755)
    env = {
        "DEVSECRETS_COMPOSE": str(fake),
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "DOCKER_CONFIG": DOCKER_CONFIG,
    }
    cache = tmp_path / "cache.json"
    with pytest.raises(ComposeError, match="needs compose >= 2.24.4"):
        find_compose(env, cache)
    assert not cache.exists()
