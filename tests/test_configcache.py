"""`compose config` for up/render: a head start, a cache keyed by every input, no second pass.

compose runs through a wrapper that logs each call, so a test sees whether compose ran."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from conftest import User, devsecrets, project_name

from devsecrets.compose import ComposeOptions
from devsecrets.configcache import _compose_options

CANARY = b"canary-cache-51c0"


@pytest.mark.parametrize(
    ("args", "options"),
    [
        (["up", "-d"], ComposeOptions()),
        (["--store", "s", "render", "--stdout"], ComposeOptions()),
        (
            ["up", "-f", "a.yml", "--file=b.yml", "-c", "c.yml", "-p", "x", "--profile", "p"],
            ComposeOptions(files=("a.yml", "b.yml", "c.yml"), project_name="x", profiles=("p",)),
        ),
        (
            ["render", "--env-file", "e", "--project-directory=d", "--on-change", "a=restart"],
            ComposeOptions(env_files=("e",), project_directory="d"),
        ),
        (["up", "--", "-f", "x"], ComposeOptions()),
        (["up", "--help"], None),
        (["ls"], None),
        (["compose", "up"], None),
    ],
)
def test_the_head_start_reads_compose_flags_as_click_does(args, options):
    found = _compose_options(args)
    assert (None if found is None else ComposeOptions(**found)) == options


@pytest.fixture
def cached_stack(alice: User, docker_engine: str, runtime_dir: Path, tmp_path: Path):
    """alice's project, compose behind a logging wrapper; yields (env, log, wrapper)."""
    alice.run("set", "s", input=CANARY)
    write(alice.project, docker_engine, target="${TARGET:-first}")
    log = tmp_path / "compose.log"
    wrapper = tmp_path / "bin" / "compose-wrapper"
    wrapper.parent.mkdir()
    make_wrapper(wrapper, log, extra="")
    env = {
        **alice.subprocess_env(),
        "DEVSECRETS_RUNTIME_DIR": str(runtime_dir),
        "COMPOSE_PROJECT_NAME": project_name(),
        "DEVSECRETS_COMPOSE": str(wrapper),
    }
    env.pop("TARGET", None)
    yield env, log, wrapper
    devsecrets(["down"], cwd=alice.project, env=env)


def write(project: Path, image: str, target: str, extra: dict | None = None) -> None:
    stack = {
        "services": {
            "app": {
                "image": image,
                "network_mode": "none",
                "secrets": [{"source": "s", "target": target}],
            },
            "extra": {
                "image": image,
                "network_mode": "none",
                "profiles": ["extra"],
                "secrets": ["s"],
            },
        },
        "secrets": {"s": {"external": True}},
        **(extra or {}),
    }
    (project / "docker-stack.yml").write_text(yaml.safe_dump(stack))


def make_wrapper(path: Path, log: Path, extra: str) -> None:
    docker = shutil.which("docker")
    path.write_text(f'#!/bin/sh\necho "$*" >> {log}\n{extra}exec {docker} compose "$@"\n')
    path.chmod(0o755)


def render(alice: User, env: dict, log: Path, *args: str) -> tuple[str, int]:
    """What render made (the override and app's secret files), and how many times compose ran
    `config --format json` meanwhile."""
    before = log.read_text().count("config --format json") if log.exists() else 0
    result = devsecrets(["render", "--stdout", *args], cwd=alice.project, env=env)
    assert result.returncode == 0, result.stderr.decode()
    assert CANARY not in result.stdout + result.stderr
    files = Path(env["DEVSECRETS_RUNTIME_DIR"]) / env["COMPOSE_PROJECT_NAME"] / "services"
    made = sorted(p.name for p in (files / "app" / "run-secrets").iterdir())
    shown = f"{result.stdout.decode()}\napp's files: {made}"
    return shown, log.read_text().count("config --format json") - before


def test_an_unchanged_stack_is_read_once(alice: User, cached_stack):
    env, log, _ = cached_stack
    first, runs = render(alice, env, log)
    assert runs == 1
    assert "files: ['first']" in first
    again, runs = render(alice, env, log)
    assert (again, runs) == (first, 0)
    assert "config --quiet" not in log.read_text()  # no second pass unless asked
    render(alice, env, log, "--check")
    assert "config --quiet" in log.read_text()


def _stack_file(alice: User, env: dict, image: str, wrapper: Path, log: Path) -> list[str]:
    write(alice.project, image, target="changed")
    return []


def _dotenv(alice: User, env: dict, image: str, wrapper: Path, log: Path) -> list[str]:
    (alice.project / ".env").write_text("TARGET=changed\n")
    return []


def _environment(alice: User, env: dict, image: str, wrapper: Path, log: Path) -> list[str]:
    env["TARGET"] = "changed"
    return []


def _env_file(alice: User, env: dict, image: str, wrapper: Path, log: Path) -> list[str]:
    (alice.project / "custom.env").write_text("TARGET=changed\n")
    return ["--env-file", "custom.env"]


def _binary(alice: User, env: dict, image: str, wrapper: Path, log: Path) -> list[str]:
    make_wrapper(wrapper, log, extra="TARGET=changed; export TARGET\n")
    return []


@pytest.mark.parametrize(
    "change",
    [_stack_file, _dotenv, _environment, _env_file, _binary],
    ids=["stack file", ".env", "environment", "--env-file's content", "compose binary"],
)
def test_a_changed_input_is_never_served_from_the_cache(
    alice: User, cached_stack, docker_engine: str, change
):
    env, log, wrapper = cached_stack
    args = ["--env-file", "custom.env"] if change is _env_file else []
    if args:
        (alice.project / "custom.env").write_text("OTHER=1\n")
    first, _ = render(alice, env, log, *args)
    _, runs = render(alice, env, log, *args)
    assert runs == 0  # served from the cache
    assert "files: ['first']" in first
    change(alice, env, docker_engine, wrapper, log)
    changed, runs = render(alice, env, log, *args)
    assert runs == 1
    assert "files: ['changed']" in changed


def test_a_profile_is_part_of_the_key(alice: User, cached_stack):
    env, log, _ = cached_stack
    plain, _ = render(alice, env, log)
    with_extra, runs = render(alice, env, log, "--profile", "extra")
    assert runs == 1
    assert "extra:" in with_extra and "extra:" not in plain


def test_a_stack_that_pulls_in_other_files_is_never_cached(
    alice: User, cached_stack, docker_engine: str
):
    env, log, _ = cached_stack
    (alice.project / "more.yml").write_text(yaml.safe_dump({"services": {}}))
    write(alice.project, docker_engine, target="first", extra={"include": ["more.yml"]})
    render(alice, env, log)
    _, runs = render(alice, env, log)
    assert runs == 1


pytestmark = pytest.mark.docker
