"""Swarm-like redeploys: `up -c`, re-running `up -d`, `watch` over a changed stack."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import User, compose_down, devsecrets, project_name, write_stack

pytestmark = pytest.mark.docker


def services_in(override: bytes) -> set[str]:
    return set(yaml.load(override, Loader=_Loader)["services"])  # noqa: S506 - our own output


class _Loader(yaml.SafeLoader):
    pass


def _untagged(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> object:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node)
    return loader.construct_scalar(node)  # type: ignore[arg-type]


_Loader.add_multi_constructor("!", _untagged)  # !override, !reset


@pytest.fixture
def env(alice: User, runtime_dir: Path):
    name = project_name()
    yield {
        **alice.subprocess_env(),
        "DEVSECRETS_RUNTIME_DIR": str(runtime_dir),
        "COMPOSE_PROJECT_NAME": name,
    }
    compose_down(name, alice.project)


def test_c_takes_stack_files_like_docker_stack_deploy(alice: User, docker_engine: str, env):
    alice.run("set", "x", input=b"x-value")
    write_stack(alice.project, docker_engine, {"api": {"secrets": ["x"]}})
    extra = {"services": {"worker": {"image": docker_engine, "secrets": ["x"]}}}
    (alice.project / "extra.yml").write_text(yaml.safe_dump(extra))
    args = ["render", "--stdout", "-c", "docker-stack.yml", "--compose-file", "extra.yml"]
    both = devsecrets(args, cwd=alice.project, env=env)
    assert both.returncode == 0, both.stderr.decode()
    assert services_in(both.stdout) == {"api", "worker"}
    mixed = devsecrets(
        ["render", "--stdout", "-c", "docker-stack.yml", "-f", "extra.yml"],
        cwd=alice.project,
        env=env,
    )
    assert mixed.stdout == both.stdout
    one = devsecrets(["render", "--stdout", "-c", "docker-stack.yml"], cwd=alice.project, env=env)
    assert services_in(one.stdout) == {"api"}
